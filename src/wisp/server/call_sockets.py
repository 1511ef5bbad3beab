"""How sandboxed containers reach the server: Unix sockets in their app's own folder.

A container of the sandbox runtime has a network namespace of its own, so the gateway's and the
control API's loopback ports are out of its reach, as is every other address. For calls between
functions (`.remote()` through the gateway, `.spawn()` and `FunctionCall` through the control
API) the server listens, per app, on two sockets in the app's socket folder, the folder its
containers already bind their own sockets in (0700, the app's uid): `gw-*.sock` and
`ctl-*.sock`. Each connection is forwarded byte for byte to the gateway's or the control API's
port, where the call token decides as before (an app's call token reaches only its own
functions' routes and its own spawned calls; nothing of the admin surface). No other app can
open those files, and a file path works across a network namespace where an abstract socket
would not. The SDK takes `unix:PATH` in WISP_CALL_URL / WISP_CONTROL_URL (`wisp._functions`).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable

from .isolation import AppUser

CHUNK = 1 << 16
Forward = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class CallSockets:
    """The per-app sockets, made on the first container of an app and kept until `close`."""

    def __init__(self, gateway_port: int) -> None:
        self.gateway_port = gateway_port
        self.control_port = 0  # set once the control API listens
        self._servers: dict[str, asyncio.AbstractServer] = {}  # path -> its server
        self._paths: set[str] = set()  # listening (their server may still be starting)
        self._tasks: set[asyncio.Task[None]] = set()

    def env(self, app_id: str, folder: str, user: AppUser | None) -> dict[str, str]:
        """The app's WISP_CALL_URL and WISP_CONTROL_URL, listening from now on."""
        digest = hashlib.sha256(app_id.encode()).hexdigest()[:10]
        gateway, control = f"{folder}/gw-{digest}.sock", f"{folder}/ctl-{digest}.sock"
        self._listen(gateway, self.gateway_port, user)
        self._listen(control, self.control_port, user)
        return {"WISP_CALL_URL": f"unix:{gateway}", "WISP_CONTROL_URL": f"unix:{control}"}

    def _listen(self, path: str, port: int, user: AppUser | None) -> None:
        if path in self._paths:
            return
        self._paths.add(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket file left by an earlier server
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        if user is not None:
            os.chown(path, user.uid, user.gid)
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            for w in (writer, up_writer):
                w.close()

        task = asyncio.ensure_future(self._serve(path, sock, forward))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, path: str, sock: socket.socket, forward: Forward) -> None:
        self._servers[path] = await asyncio.start_unix_server(forward, sock=sock)

    async def close(self) -> None:
        for task in list(self._tasks):
            await task
        for path, server in self._servers.items():
            server.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._servers.clear()
        self._paths.clear()


__all__ = ["CallSockets"]

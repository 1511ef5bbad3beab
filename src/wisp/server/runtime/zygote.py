"""The zygote runtime: containers forked from a per-image process that has imported the runtime.

A fork skips the interpreter start and the imports of uvicorn/FastAPI/pydantic that a fresh
container spends most of its ~0.7 s on. One zygote per image Python, started ahead of need
(`prepare`) and restarted if it dies. Containers are still process groups of their own (the
child calls setsid), so stopping one is the same as on the local runtime; the zygote reports
their exit codes through a status pipe, since the server is not their parent.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from .local import LocalRuntime

ZYGOTE_START_TIMEOUT = 60.0


class ZygoteError(Exception):
    pass


class ForkedProcess:
    """A container forked by a zygote: output and exit status arrive through pipes."""

    def __init__(self, pid: int, output: asyncio.StreamReader, status: asyncio.StreamReader) -> None:
        self.pid = pid
        self._output = output
        self._status = status
        self._code: int | None = None
        self._exit: asyncio.Task[int] | None = None  # one reader of the status pipe, shared
        self.note: str | None = None

    async def lines(self) -> AsyncIterator[bytes]:
        while True:
            try:
                line = await self._output.readline()
            except ValueError:  # a line over the stream limit: pass it on in pieces
                line = await self._output.read(65536)
            if not line:
                return
            yield line

    async def wait(self) -> int:
        if self._exit is None:
            self._exit = asyncio.ensure_future(self._read_status())
        return await asyncio.shield(self._exit)

    async def _read_status(self) -> int:
        data = await self._status.read()
        if data:
            self._code = int(data)
        else:  # the zygote died before reaping it: make sure nothing of it is left
            self._signal(signal.SIGKILL)
            self._code = -1
        return self._code

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace: float) -> None:
        if self._code is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), grace)
            except asyncio.TimeoutError:
                pass
        self._signal(signal.SIGKILL)
        await self.wait()


class Zygote:
    def __init__(self, python: str, socket_path: str) -> None:
        self.python = python
        self.socket_path = socket_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "wisp._runtime.zygote", "--socket", self.socket_path,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), ZYGOTE_START_TIMEOUT)
        try:
            if not json.loads(line).get("ready"):
                raise ValueError
        except ValueError:
            rest = await self.proc.stdout.read()
            raise ZygoteError(f"the zygote for {self.python} did not start: {(line + rest).decode(errors='replace')}") from None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def fork(self, args: Sequence[str], env: Mapping[str, str], cwd: Path) -> ForkedProcess:
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        status_r, status_w = os.pipe()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, self.socket_path)
            request = json.dumps({"args": list(args), "env": dict(env), "cwd": str(cwd)}).encode()
            sock.setblocking(True)  # a small message on a local socket: sending does not block
            socket.send_fds(sock, [request], [out_w, status_w])
            sock.setblocking(False)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    raise ZygoteError("the zygote closed the connection without forking")
                reply += chunk
        finally:
            sock.close()
            os.close(out_w)
            os.close(status_w)
        answer = json.loads(reply)
        if "pid" not in answer:
            os.close(out_r)
            os.close(status_r)
            raise ZygoteError(answer.get("error", "the zygote refused to fork"))
        return ForkedProcess(answer["pid"], await _reader(out_r), await _reader(status_r))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    return reader


class ZygoteRuntime:
    """Fork containers from per-image zygotes; fall back to fresh processes, with the reason."""

    name = "zygote"

    def __init__(self) -> None:
        self._fallback = LocalRuntime()
        self._zygotes: dict[str, Zygote] = {}
        self._starting: dict[str, asyncio.Task[Zygote]] = {}
        self._dir = tempfile.mkdtemp(prefix="wisp-z-")

    def prepare(self, python: str) -> None:
        """Start the image's zygote ahead of the first request."""
        if python not in self._zygotes and python not in self._starting:
            self._starting[python] = asyncio.ensure_future(self._start_zygote(python))

    async def _start_zygote(self, python: str) -> Zygote:
        zygote = Zygote(python, f"{self._dir}/z{len(self._zygotes) + len(self._starting)}-{os.getpid()}.sock")
        try:
            await zygote.start()
        finally:
            self._starting.pop(python, None)
        self._zygotes[python] = zygote
        return zygote

    async def _zygote(self, python: str) -> Zygote:
        zygote = self._zygotes.get(python)
        if zygote is not None and zygote.alive:
            return zygote
        self._zygotes.pop(python, None)
        if zygote is not None:
            with contextlib.suppress(OSError):
                os.unlink(zygote.socket_path)
        self.prepare(python)
        task = self._starting.get(python)
        if task is None:  # finished between prepare and here
            return self._zygotes[python]
        return await asyncio.shield(task)

    async def start(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path):  # type: ignore[no-untyped-def]
        python, rest = argv[0], list(argv[1:])
        if rest[:2] != ["-m", "wisp._runtime"] or env.get("WISP_ZYGOTE") == "0":
            return await self._fallback.start(argv, env=env, cwd=cwd)
        try:
            zygote = await self._zygote(python)
            return await zygote.fork(rest[2:], env, cwd)
        except (ZygoteError, OSError, asyncio.TimeoutError) as exc:
            process = await self._fallback.start(argv, env=env, cwd=cwd)
            # The pool logs container output: the reason shows up in the app's logs.
            process.note = f"started as a fresh process, not forked from a zygote: {exc}"
            return process

    async def close(self) -> None:
        for task in list(self._starting.values()):
            task.cancel()
        await asyncio.gather(*(z.stop() for z in self._zygotes.values()))
        self._zygotes.clear()
        with contextlib.suppress(OSError):
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)

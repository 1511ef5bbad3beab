"""The gateway's listening side: accept client connections, close idle ones, shut down."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping

from ._target import Target
from .protocol import ClientConnection, GatewayState
from .upstream import UpstreamPool

IDLE_TIMEOUT = 75.0  # seconds a client connection may sit without a request in progress
BACKLOG = 2048


class Gateway:
    """HTTP/1.1 reverse proxy from clients to containers, routed by `routes` (label -> Target).

    `routes` is read on every request, so the server may add and remove labels while it runs.
    """

    def __init__(self, routes: Mapping[str, Target], *, max_body_size: int = 100 * 1024 * 1024) -> None:
        self._state = GatewayState(routes, UpstreamPool(), max_body_size)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.idle_timeout = IDLE_TIMEOUT

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        """Listen on host:port (port 0 picks a free one), or on `sock` when given."""
        loop = asyncio.get_running_loop()
        state = self._state
        if sock is not None:
            self._server = await loop.create_server(lambda: ClientConnection(state), sock=sock, backlog=BACKLOG)
        else:
            self._server = await loop.create_server(lambda: ClientConnection(state), host, port, backlog=BACKLOG)
        state.port = self.port
        self._sweeper = loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("The gateway has no port before `await gateway.start(host, port)`.")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def pool(self) -> UpstreamPool:
        return self._state.pool

    async def close(self) -> None:
        """Stop listening and cut every client and container connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            self._server.close()
        for conn in list(self._state.connections):
            conn.shutdown()
        self._state.pool.close()
        if self._server is not None:
            await self._server.wait_closed()
        # Closed transports report connection_lost and cancelled acquires finish on the next
        # turns of the loop; let them, so nothing outlives the gateway.
        for _ in range(3):
            await asyncio.sleep(0)

    async def _sweep(self) -> None:
        # A sweep instead of a timer per connection keeps the per-request cost at one clock read.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.idle_timeout / 5, 15.0))
            deadline = loop.time() - self.idle_timeout
            for conn in list(self._state.connections):
                if conn.idle_since is not None and conn.idle_since < deadline:
                    conn.close_idle()

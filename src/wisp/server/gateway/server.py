"""The gateway's listening side: accept client connections, close idle ones, shut down."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from typing import NamedTuple

from ._target import Target
from .calls import Calls
from .protocol import ClientConnection, GatewayState
from .upstream import UpstreamPool

IDLE_TIMEOUT = 75.0  # seconds a client connection may sit without a request in progress
HEAD_TIMEOUT = 10.0  # seconds a request's line and headers may take to arrive, once begun
BODY_TIMEOUT = 30.0  # seconds a request body may go without a byte arriving while the gateway reads
MAX_CONNECTIONS = 8192  # client connections open at once (WISP_MAX_CONNECTIONS; 0: no cap)
MAX_CLIENT_CONNECTIONS = 512  # of them from one client address (WISP_MAX_CLIENT_CONNECTIONS; 0: no cap)
REDIRECT_AFTER = 150.0  # seconds without a response before a 303 to the call's result (S7)
RESULT_TTL = 600.0  # seconds a detached call's result stays fetchable after it finished
BACKLOG = 2048
FLUSH_SECONDS = 1.0  # after the shutdown grace, how long the gateway's 503s get to reach their clients


class Drained(NamedTuple):
    """What a shutdown's drain found: busy connections at its start, and at the end of the
    grace period requests answered 503 (never started) and responses or WebSockets cut."""

    busy: int
    answered_503: int
    cut: int


class Gateway:
    """HTTP/1.1 reverse proxy from clients to containers, routed by `routes` (label -> Target).

    `routes` is read on every request, so the server may add and remove labels while it runs.
    """

    def __init__(self, routes: Mapping[str, Target], *, max_body_size: int = 100 * 1024 * 1024,
                 redirect_after: float = REDIRECT_AFTER, result_ttl: float = RESULT_TTL,
                 max_connections: int = MAX_CONNECTIONS, max_client_connections: int = MAX_CLIENT_CONNECTIONS,
                 body_timeout: float = BODY_TIMEOUT) -> None:
        """`max_connections`, `max_client_connections`: 0 is no cap."""
        if redirect_after <= 0 or result_ttl < 0:
            raise ValueError(f"redirect_after must be > 0 and result_ttl >= 0, got {redirect_after} and {result_ttl}.")
        if max_connections < 0 or max_client_connections < 0 or body_timeout <= 0:
            raise ValueError(f"connection caps must be >= 0 (0: none) and body_timeout > 0, got {max_connections}, "
                             f"{max_client_connections} and {body_timeout}.")
        self._calls = Calls(result_ttl)
        self._state = GatewayState(routes, UpstreamPool(), max_body_size, self._calls, redirect_after)
        self._state.max_connections = max_connections or 1 << 62
        self._state.max_client_connections = max_client_connections or 1 << 62
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.idle_timeout = IDLE_TIMEOUT
        self.head_timeout = HEAD_TIMEOUT
        self.body_timeout = body_timeout

    async def start(self, host: str, port: int, sock: socket.socket | None = None, *, serve: bool = True) -> None:
        """Listen on host:port (port 0 picks a free one), or on `sock` when given.

        serve=False binds the port (so one in use fails here) but refuses connections until
        `serve()`: the server restores its apps first, so none of their URLs answers 404.
        """
        loop = asyncio.get_running_loop()
        state = self._state
        if sock is not None:
            self._server = await loop.create_server(lambda: ClientConnection(state), sock=sock, backlog=BACKLOG,
                                                    start_serving=serve)
        else:
            self._server = await loop.create_server(lambda: ClientConnection(state), host, port, backlog=BACKLOG,
                                                    start_serving=serve)
        state.port = self.port
        self._sweeper = loop.create_task(self._sweep())

    async def serve(self) -> None:
        """Start accepting connections (after `start(..., serve=False)`)."""
        if self._server is None:
            raise RuntimeError("The gateway has no port before `await gateway.start(host, port)`.")
        await self._server.start_serving()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("The gateway has no port before `await gateway.start(host, port)`.")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def pool(self) -> UpstreamPool:
        return self._state.pool

    @property
    def calls(self) -> Calls:
        """Requests redirected by the 303 chain, running or finished and kept."""
        return self._calls

    def busy(self) -> int:
        """Client connections with a request in progress (an open WebSocket counts)."""
        return sum(1 for conn in self._state.connections if conn.busy)

    async def drain(self, grace: float) -> Drained:
        """Stop accepting connections and let the requests in progress finish, for at most
        `grace` seconds; then answer 503 to those still waiting for their response and cut the
        rest (responses under way, WebSockets). `close()` comes after.

        Idle keep-alive connections close at once; a busy one closes after the response in
        progress, which says `Connection: close` (uvicorn and nginx do the same). Requests
        waiting for a container keep waiting: a pool that can serve them within the grace
        period does.
        """
        state = self._state
        state.draining = True
        if self._server is not None:
            self._server.close()  # the kernel refuses new connections from now on
        busy = 0
        for conn in list(state.connections):
            busy += conn.busy
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(conn.busy for conn in state.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        answered = cut = 0
        for conn in list(state.connections):
            ended = conn.give_up(grace)
            answered += ended == "503"
            cut += ended == "cut"
        # The 503s are written; give them a moment to leave before close() aborts what is left.
        flush_until = loop.time() + FLUSH_SECONDS
        while state.connections and loop.time() < flush_until:
            await asyncio.sleep(0.02)
        return Drained(busy, answered, cut)

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
        self._calls.close()
        self._state.pool.close()
        if self._server is not None:
            await self._server.wait_closed()
        # Closed transports report connection_lost and cancelled acquires finish on the next
        # turns of the loop; let them, so nothing outlives the gateway.
        for _ in range(3):
            await asyncio.sleep(0)

    def sweep_interval(self) -> float:
        # Idle closing is precise to a fifth of the idle timeout; redirects and timeouts to about
        # a second (a twentieth of the window when it is short, as in tests).
        return max(0.01, min(self.idle_timeout / 5, self.head_timeout / 5, self.body_timeout / 5, 1.0,
                             self._state.redirect_after / 20))

    async def _sweep(self) -> None:
        # A sweep instead of timers per request keeps the per-request cost at one clock read.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_interval())
            now = loop.time()
            deadline = now - self.idle_timeout
            head_deadline = now - self.head_timeout
            for conn in list(self._state.connections):
                if conn.head_started is not None and conn.head_started < head_deadline:
                    conn.head_timed_out(self.head_timeout)
                elif conn.idle_since is None:
                    conn.check_body(now, self.body_timeout)
                    conn.check_wait(now)
                elif conn.idle_since < deadline:
                    conn.close_idle()
            self._calls.sweep(now)

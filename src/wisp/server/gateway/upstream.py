"""Connections to containers (uvicorn on a Unix socket) and the pool of idle ones.

A connection parses responses with httptools and hands the events to the exchange it is
bound to; between requests it sits in the pool, where a peer that closes it is noticed at
once (EOF) and the connection dropped.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import httptools

from ..._protocol import tcp_address

logger = logging.getLogger("wisp.gateway")

MAX_IDLE_PER_CONTAINER = 64  # beyond this a finished connection is closed, not kept


# Bytes a transport may hold unsent before the other side stops being read (asyncio's default
# is 64 KiB): fewer pause/resume turns on big bodies. With it, a 1 GiB upload through the
# gateway went from 780 to ~960 MiB/s and a download from 1467 to ~2450 MiB/s
# (benchmarks/http_gateway.py); memory stays bounded per connection.
WRITE_BUFFER_HIGH = 256 << 10


class ResponseHandler(Protocol):
    """What a connection reports to the exchange it serves."""

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_complete(self) -> None: ...
    def upstream_lost(self, exc: BaseException | None) -> None: ...
    def flush(self) -> None: ...
    def upgraded(self, rest: bytes) -> None: ...
    def upstream_paused(self) -> None: ...
    def upstream_resumed(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, path: str) -> None:
        self.pool = pool
        self.path = path
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set at once
        self.handler: ResponseHandler | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False  # it has carried a request before: it may have died while idle
        self.received = False  # bytes arrived for the current request
        self._reading = True
        self._informational = False
        self._ended = False  # a response ended in the read being parsed
        self._switching = False  # a 101 was read: what follows is not HTTP
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []

    # -- used by the exchange --------------------------------------------------------------
    def bind(self, handler: ResponseHandler) -> None:
        self.handler = handler
        self.received = False

    def write(self, data: bytes) -> None:
        transport = self.transport
        if not self.closed and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        self.handler = None
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.handler = None
        self.closed = True
        self.transport.abort()

    def pause_reading(self) -> None:
        if self._reading and not self.closed:
            self._reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and not self.closed:
            self._reading = True
            self.transport.resume_reading()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio passes a BaseTransport; a stream socket's is a Transport
        self.transport.set_write_buffer_limits(WRITE_BUFFER_HIGH)
        self.pool.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        handler = self.handler
        if handler is not None:
            self.handler = None
            handler.upstream_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.handler is None:
            self.close()  # bytes nobody asked for: the next response could not be trusted
            return
        self.received = True
        self._ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0]:] if exc.args else b"")
        except httptools.HttpParserError as exc:
            self._broken(exc)
        else:
            if self.handler is not None:
                self.handler.flush()

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.upstream_paused()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.upstream_resumed()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._ended:  # bytes after a response, read with it: never the response of a request sent since
            self._out_of_step()
        elif self.handler is None:
            self.close()  # a second response to one request: the stream is out of step
        self._reason = b""
        self._headers = []

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:
            self._switching = True
            if self.handler is not None:
                self.handler.response_head(status, self._reason, self._headers, False)
            return
        if status < 200:
            self._informational = True  # e.g. 100 Continue: the final response follows
            return
        if self.handler is not None:
            self.handler.response_head(status, self._reason, self._headers, self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.handler is not None:
            self.handler.response_body(body)

    def on_message_complete(self) -> None:
        if self._switching:
            return  # the handshake's end: llhttp stops with HttpParserUpgrade next
        if self._informational:
            self._informational = False
        elif self.handler is not None:
            self._ended = True  # its handler may hand this connection to the next request right away
            self.handler.response_complete()

    def _out_of_step(self) -> None:
        """The container sent more than the response: close. A request written on the
        connection meanwhile was not read by it (as far as anyone can tell): it is replayed."""
        handler = self.handler
        self.close()
        if handler is not None:
            handler.upstream_lost(BrokenPipeError("the container sent bytes after its response"))

    def _upgraded(self, rest: bytes) -> None:
        handler = self.handler
        if not self._switching or handler is None:
            self._broken(httptools.HttpParserError("an upgrade the gateway did not ask for"))
            return
        handler.upgraded(rest)

    def _broken(self, exc: httptools.HttpParserError) -> None:
        if isinstance(exc, httptools.HttpParserCallbackError):
            logger.error("gateway error while relaying a response", exc_info=exc.__context__ or exc)
        handler = self.handler
        self.close()
        if handler is not None:
            handler.upstream_lost(exc)


class UpstreamPool:
    """Idle keep-alive connections per container socket, newest first."""

    def __init__(self) -> None:
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._open: set[UpstreamConnection] = set()

    def take(self, path: str) -> UpstreamConnection | None:
        idle = self._idle.get(path)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def put(self, conn: UpstreamConnection) -> None:
        """Keep a connection whose last exchange finished cleanly for the next request."""
        conn.handler = None
        if conn.closed:
            return
        idle = self._idle.setdefault(conn.path, [])
        if len(idle) >= MAX_IDLE_PER_CONTAINER:
            conn.close()
            return
        conn.reused = True
        conn.resume_reading()  # an idle connection must read, or a peer's close goes unseen
        idle.append(conn)

    async def connect(self, path: str) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        if (address := tcp_address(path)) is not None:  # a container on a cluster's node
            _, conn = await loop.create_connection(lambda: UpstreamConnection(self, path), address[0], address[1])
            return conn
        _, conn = await loop.create_unix_connection(lambda: UpstreamConnection(self, path), path)
        return conn

    def idle_count(self, path: str) -> int:
        return sum(not c.closed for c in self._idle.get(path, ()))

    def close(self) -> None:
        """Cut every connection, idle or not (at shutdown)."""
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()

    def opened(self, conn: UpstreamConnection) -> None:
        self._open.add(conn)

    def lost(self, conn: UpstreamConnection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.path)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.path]

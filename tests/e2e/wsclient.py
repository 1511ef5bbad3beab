"""A small blocking WebSocket client on wsproto, for tests and benchmarks (no asyncio needed)."""
from __future__ import annotations

import socket
from collections import deque
from collections.abc import Sequence

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


class Rejected(Exception):
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"handshake rejected with {status}")
        self.status, self.headers, self.body = status, headers, body


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code, self.reason = code, reason


class WebSocket:
    def __init__(self, port: int, path: str, *, host: str = "127.0.0.1", host_header: str | None = None,
                 subprotocols: Sequence[str] = (), headers: Sequence[tuple[str, str]] = (), timeout: float = 10) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._events: deque[Event] = deque()
        self._parts: list[str | bytes] = []
        request = Request(host=host_header or f"{host}:{port}", target=path, subprotocols=list(subprotocols),
                          extra_headers=[(k.encode(), v.encode()) for k, v in headers])
        try:
            self._handshake(request)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, request: Request) -> None:
        self.sock.sendall(self.ws.send(request))
        event = self._next()
        if isinstance(event, RejectConnection):
            body = b""
            if event.has_body:
                while not isinstance(e := self._next(), RejectData) or not e.body_finished:
                    body += e.data if isinstance(e, RejectData) else b""
                body += e.data
            raise Rejected(event.status_code, {k.decode().lower(): v.decode() for k, v in event.headers}, body)
        assert isinstance(event, AcceptConnection), event
        self.subprotocol = event.subprotocol
        self.headers = {k.decode().lower(): v.decode() for k, v in event.extra_headers}

    # -- sending ---------------------------------------------------------------------------------
    def send(self, data: str | bytes) -> None:
        self.sock.sendall(self.ws.send(Message(data=data)))

    def ping(self, payload: bytes = b"") -> None:
        self.sock.sendall(self.ws.send(Ping(payload=payload)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.sock.sendall(self.ws.send(CloseConnection(code=code, reason=reason)))

    # -- receiving -------------------------------------------------------------------------------
    def recv(self) -> str | bytes:
        """The next whole message; pings are answered on the way; a close raises Closed."""
        while True:
            event = self._next()
            if isinstance(event, (TextMessage, BytesMessage)):
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._answer_close(event)
                raise Closed(event.code, event.reason or "")

    def recv_pong(self) -> bytes:
        while True:
            event = self._next()
            if isinstance(event, Pong):
                return bytes(event.payload)
            if isinstance(event, CloseConnection):
                raise Closed(event.code, event.reason or "")

    def wait_closed(self) -> Closed:
        """After close(): the server's close frame."""
        try:
            while True:
                self.recv()
        except Closed as closed:
            return closed

    def _answer_close(self, event: CloseConnection) -> None:
        from wsproto.connection import ConnectionState

        if self.ws.state is ConnectionState.REMOTE_CLOSING:
            self.sock.sendall(self.ws.send(event.response()))

    def _next(self) -> Event:
        while not self._events:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self._events.extend(self.ws.events())
            if not data and not self._events:
                raise ConnectionError("the connection closed")
        return self._events.popleft()

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

"""WebSockets through the gateway, in process: uvicorn (wsproto) upstream, a wsproto client."""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket as ServerSocket

from e2e.wsclient import Closed, Rejected, WebSocket

from .test_gateway import FakeTarget, Harness, assert_releases, get, make_harness, wait_until

__all__ = ["make_harness"]


class Record:
    def __init__(self) -> None:
        self.disconnect_codes: list[int] = []
        self.closed = threading.Event()
        self.headers: dict[str, str] = {}


def make_app(record: Record) -> Starlette:
    async def echo(ws: ServerSocket) -> None:
        record.headers = dict(ws.headers)
        chosen = "chat.v2" if "chat.v2" in ws.scope["subprotocols"] else None
        await ws.accept(subprotocol=chosen)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    record.disconnect_codes.append(message.get("code", 0))
                    return
                if message.get("text") == "close-me":
                    await ws.close(code=4001, reason="asked to")
                    return
                if message.get("text") is not None:
                    await ws.send_text("echo:" + message["text"])
                else:
                    await ws.send_bytes(message["bytes"][::-1])
        finally:
            record.closed.set()

    async def refuse(ws: ServerSocket) -> None:
        await ws.close(code=1008)  # before accept: uvicorn answers the handshake with 403

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse("plain page")

    return Starlette(routes=[WebSocketRoute("/app/ws", echo), WebSocketRoute("/app/refuse", refuse),
                             Route("/app/page", page)])


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness(redirect_after=0.2, idle_timeout=0.3)


def served(h: Harness) -> tuple[FakeTarget, Record]:
    record = Record()
    return h.serve("app", make_app(record), ws="wsproto", ws_ping_interval=None), record


def test_text_and_binary_frames_both_ways(h: Harness) -> None:
    target, record = served(h)
    with WebSocket(h.port, "/app/ws") as ws:
        ws.send("hello")
        assert ws.recv() == "echo:hello"
        ws.send(b"\x00\x01\x02")
        assert ws.recv() == b"\x02\x01\x00"
        big = os.urandom(4 * 1024 * 1024)  # more than any transport buffer: flow control both ways
        ws.send(big)
        assert ws.recv() == big[::-1]
        ws.close(1000)
        assert ws.wait_closed().code == 1000
    assert record.closed.wait(5)
    assert_releases(target, [False])
    assert target.statuses == [101]


def test_subprotocol_and_handshake_headers(h: Harness) -> None:
    _, record = served(h)
    with WebSocket(h.port, "/app/ws", subprotocols=["chat.v1", "chat.v2"], headers=[("X-Custom", "kept")]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.headers["x-wisp-request-id"]
        ws.send("x")
        assert ws.recv() == "echo:x"
    assert record.headers["x-custom"] == "kept"
    assert record.headers["x-forwarded-for"] == "127.0.0.1"
    assert record.headers["x-wisp-request-id"]


def test_ping_is_answered_with_its_payload(h: Harness) -> None:
    served(h)
    with WebSocket(h.port, "/app/ws") as ws:
        ws.ping(b"are you there")
        assert ws.recv_pong() == b"are you there"


def test_close_codes_pass_both_ways(h: Harness) -> None:
    _, record = served(h)
    with WebSocket(h.port, "/app/ws") as ws:
        ws.send("close-me")
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert (closed.value.code, closed.value.reason) == (4001, "asked to")
    with WebSocket(h.port, "/app/ws") as ws:
        ws.close(4002, "client says bye")
        ws.wait_closed()
    wait_until(lambda: record.disconnect_codes == [4002])


def test_an_open_websocket_holds_its_lease_past_the_window_and_the_idle_timeout(h: Harness) -> None:
    target, _ = served(h)
    with WebSocket(h.port, "/app/ws") as ws:
        time.sleep(1.0)  # redirect window 0.2 s, idle timeout 0.3 s
        assert target.releases == []  # still in flight
        ws.send("still here")
        assert ws.recv() == "echo:still here"
    assert_releases(target, [False])


def test_a_refused_handshake_is_answered_and_closed(h: Harness) -> None:
    target, _ = served(h)
    with pytest.raises(Rejected) as rejected:
        WebSocket(h.port, "/app/refuse")
    assert rejected.value.status == 403
    assert rejected.value.headers["x-wisp-request-id"]
    assert_releases(target, [False])


def test_frames_sent_right_behind_the_handshake_arrive(h: Harness) -> None:
    served(h)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    frame = bytes([0x81, 0x80 | 2]) + b"\x00\x00\x00\x00" + b"hi"  # masked text "hi", zero mask
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as sock:
        sock.sendall(
            b"GET /app/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key.encode() + b"\r\n\r\n" + frame)
        data = b""
        while b"echo:hi" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 101 ")
    assert b"connection: upgrade" in data.lower() and b"upgrade: websocket" in data.lower()


def test_plain_requests_still_work_beside_websockets(h: Harness) -> None:
    target, _ = served(h)
    with WebSocket(h.port, "/app/ws") as ws:
        assert get(h, "/app/page")[2] == b"plain page"
        ws.send("x")
        assert ws.recv() == "echo:x"
    assert target.long_lived == 1  # the handshake's lease was told; the plain request's was not


def test_the_gateway_closing_cuts_open_websockets(h: Harness) -> None:
    target, _ = served(h)
    ws = WebSocket(h.port, "/app/ws")
    ws.send("x")
    assert ws.recv() == "echo:x"
    h.call(h.gateway.close())
    with pytest.raises((Closed, ConnectionError, OSError)):
        ws.recv()
    ws.shutdown()
    assert_releases(target, [False])


def test_a_client_that_vanishes_frees_the_lease_and_the_app_sees_it(h: Harness) -> None:
    target, record = served(h)
    ws = WebSocket(h.port, "/app/ws")
    ws.send("x")
    assert ws.recv() == "echo:x"
    ws.shutdown()  # no close frame
    assert record.closed.wait(5)
    assert_releases(target, [False])

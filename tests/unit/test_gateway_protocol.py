"""The client protocol fed bytes through a mock transport: no sockets, no containers.

Only answers the gateway gives itself are exercised here; proxying is in test_gateway.py.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from wisp.server.gateway import Lease, PlainTarget
from wisp.server.gateway.protocol import ClientConnection, GatewayState
from wisp.server.gateway.upstream import WRITE_BUFFER_HIGH, UpstreamPool


class MockTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.eof_written = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.9", 5555) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.write_buffer_high = high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed and not self.eof_written
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Waiting(PlainTarget):
    """A target whose container never becomes ready."""

    async def acquire(self) -> Lease:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def run(feed: Callable[[ClientConnection], None], *, max_body_size: int = 1024) -> MockTransport:
    async def main() -> MockTransport:
        transport = MockTransport()
        conn = ClientConnection(GatewayState({"known": Waiting()}, UpstreamPool(), max_body_size))
        conn.connection_made(transport)
        feed(conn)
        for _ in range(5):  # queued requests start on later turns of the loop
            await asyncio.sleep(0)
        conn.connection_lost(None)
        return transport

    return asyncio.run(main())


def statuses(written: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", written)


def test_pipelined_answers_come_in_order_and_the_connection_stays() -> None:
    t = run(lambda c: c.data_received(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /known/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048 +
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert statuses(t.written) == [b"404", b"413", b"404", b"404"]
    # The bodies answered early were small: read and dropped, the connection goes on.
    assert b"connection: close" not in t.written
    assert not t.closed and t.reading
    # HEAD: the same head, no body.
    assert t.written.endswith(b"\r\n\r\n")


def test_unread_body_closes_after_the_answer_with_a_lingering_half_close() -> None:
    t = run(lambda c: c.data_received(
        b"POST /known HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial"),
        max_body_size=70000)
    assert statuses(t.written) == [b"413"]
    assert b"connection: close" in t.written
    assert t.eof_written and t.reading


def test_garbage_is_400_and_closes() -> None:
    t = run(lambda c: c.data_received(b"\x16\x03\x01 not http\r\n\r\n"))
    assert statuses(t.written) == [b"400"]
    assert t.eof_written


def test_requests_before_garbage_are_answered_first() -> None:
    t = run(lambda c: c.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nBOGUS\r\n\r\n"))
    assert statuses(t.written) == [b"404", b"400"]


def test_bad_chunk_in_a_body_is_400() -> None:
    t = run(lambda c: c.data_received(
        b"POST /known/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"))
    assert statuses(t.written) == [b"400"]
    assert t.eof_written


def test_a_chunked_body_answered_early_closes() -> None:
    t = run(lambda c: c.data_received(
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"))
    assert statuses(t.written) == [b"404"]
    assert b"connection: close" in t.written and t.eof_written


def test_a_client_waiting_for_100_continue_is_answered_and_closed() -> None:
    t = run(lambda c: c.data_received(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"))
    assert statuses(t.written) == [b"404"]
    assert b"connection: close" in t.written


def test_http10_without_keep_alive_is_closed_and_with_it_is_kept() -> None:
    closed = run(lambda c: c.data_received(b"GET /a HTTP/1.0\r\n\r\n"))
    assert b"connection: close" in closed.written and closed.closed
    kept = run(lambda c: c.data_received(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
    assert b"connection: keep-alive" in kept.written and not kept.closed


def test_an_upgrade_request_is_answered_then_the_connection_closes() -> None:
    t = run(lambda c: c.data_received(
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"))
    assert statuses(t.written) == [b"404"]
    assert t.closed


def test_a_huge_head_is_431_and_closes() -> None:
    def feed(conn: ClientConnection) -> None:
        conn.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nX-Big: ")
        for _ in range(20):  # one header value, never finished
            conn.data_received(b"y" * 4096)

    t = run(feed)
    assert statuses(t.written) == [b"404", b"431"]
    assert t.eof_written


def test_a_large_head_under_the_limit_is_fine() -> None:
    def feed(conn: ClientConnection) -> None:
        conn.data_received(b"GET /a HTTP/1.1\r\nX-Big: ")
        for _ in range(10):
            conn.data_received(b"y" * 4096)
        conn.data_received(b"\r\n\r\n")

    assert statuses(run(feed).written) == [b"404"]


def test_a_huge_head_in_one_read_is_431_too() -> None:
    headers = b"".join(b"X-Big-%d: %s\r\n" % (i, b"y" * 1000) for i in range(80))
    t = run(lambda c: c.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"))
    assert statuses(t.written) == [b"431"]
    t = run(lambda c: c.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n" + headers))  # not even finished
    assert statuses(t.written) == [b"431"]


def test_a_websocket_handshake_waits_for_its_answer_keeping_what_follows() -> None:
    conns: list[ClientConnection] = []

    def feed(conn: ClientConnection) -> None:
        conns.append(conn)
        conn.data_received(b"GET /known/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                           b"Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x82frame")

    t = run(feed)
    req = conns[0]._active
    assert req is not None and req.websocket and req.tunnel_data == b"\x81\x82frame"
    assert not t.reading and t.written == b""  # nothing parsed past the handshake


def test_a_client_connection_buffers_a_quarter_mebibyte_before_pausing_its_peer() -> None:
    transport = run(lambda conn: None)
    assert transport.write_buffer_high == WRITE_BUFFER_HIGH == 256 * 1024

"""Request heads the gateway must refuse or rewrite (issue 11, point 7), fed as raw bytes.

Statuses come from the client protocol over a mock transport; what the app would see comes
from the upstream head built for the request.
"""
from __future__ import annotations

import asyncio

import pytest

from wisp.server.gateway import Lease, PlainTarget, TargetUnavailable
from wisp.server.gateway.protocol import ClientConnection, GatewayState
from wisp.server.gateway.request import upstream_head
from wisp.server.gateway.upstream import UpstreamPool

from .test_gateway_heads import header_lines, parsed
from .test_gateway_protocol import MockTransport, Waiting, statuses


class Named(PlainTarget):
    """A target that answers 503 naming itself: the status shows where a request was routed."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def acquire(self) -> Lease:
        raise TargetUnavailable(503, f"routed to {self.name}")


def feed(*chunks: bytes) -> MockTransport:
    async def main() -> MockTransport:
        transport = MockTransport()
        routes = {"app--fn": Named("app--fn"), "other": Named("other")}
        conn = ClientConnection(GatewayState(routes, UpstreamPool(), 1024))
        conn.connection_made(transport)
        for chunk in chunks:
            if not transport.closed and not transport.eof_written:
                conn.data_received(chunk)
            for _ in range(5):
                await asyncio.sleep(0)
        conn.connection_lost(None)
        return transport

    return asyncio.run(main())


@pytest.mark.parametrize(("chunks", "status", "routed_to"), [
    # Two Host headers: refused, whichever a router or the app would have picked.
    ([b"GET / HTTP/1.1\r\nHost: app--fn.localhost\r\nHost: other.localhost\r\n\r\n"], b"400", None),
    ([b"GET /other/ HTTP/1.1\r\nHost: a\r\nX: 1\r\nhost: a\r\n\r\n"], b"400", None),
    # Absolute form: the target's authority routes, whatever Host says.
    ([b"GET http://app--fn.localhost:8400/path HTTP/1.1\r\nHost: other.localhost\r\n\r\n"], b"503", b"app--fn"),
    ([b"GET HTTP://App--Fn.localhost/ HTTP/1.1\r\n\r\n"], b"503", b"app--fn"),
    ([b"GET http://127.0.0.1:8400/other/x?q=1 HTTP/1.1\r\nHost: app--fn.localhost\r\n\r\n"], b"503", b"other"),
    ([b"GET http://nobody.localhost/app--fn/ HTTP/1.1\r\n\r\n"], b"503", b"app--fn"),
    ([b"GET http://u:p@app--fn.localhost/ HTTP/1.1\r\n\r\n"], b"400", None),
    ([b"GET ftp://app--fn.localhost/ HTTP/1.1\r\n\r\n"], b"400", None),
    # No HTTP version: 400 at once, with or without the blank line, in one read or several.
    ([b"GET /\r\n"], b"400", None),
    ([b"GET /app--fn/\r\n\r\n"], b"400", None),
    ([b"GET /app--fn/\r\nHost: app--fn.localhost\r\n\r\n"], b"400", None),
    ([b"GET /ot", b"her/", b"\r", b"\n"], b"400", None),
    ([b"GET / HTTP/0.9\r\n\r\n"], b"400", None),
    ([b"GET / HTTP/2.0\r\n\r\n"], b"505", None),
    # Still fine: a request line and headers that arrive in pieces.
    ([b"GET /other/ HT", b"TP/1.1\r\n", b"Host: a\r\n", b"\r\n"], b"503", b"other"),
    ([b"GET /other/ HTTP/1.1\r\nX: GET /other/\r\n", b"\r\n"], b"503", b"other"),
    ([b"GET /other/ HTTP/1.0\r\n\r\n"], b"503", b"other"),
])
def test_request_heads(chunks: list[bytes], status: bytes, routed_to: bytes | None) -> None:
    t = feed(*chunks)
    assert statuses(t.written) == [status], t.written
    if routed_to is not None:
        assert b"routed to " + routed_to in t.written
    else:
        assert t.eof_written or t.closed  # refused input closes the connection


def test_a_bad_head_after_a_good_one_is_answered_after_it() -> None:
    t = feed(b"GET /other/ HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
             b"GET /other/ HTTP/1.1\r\n\r\n")
    assert statuses(t.written) == [b"503", b"400"]
    assert t.eof_written


@pytest.mark.parametrize(("raw", "target", "host"), [
    (b"GET http://app--fn.localhost:8400/path?q=1 HTTP/1.1\r\nHost: other\r\n\r\n", b"/path?q=1",
     b"app--fn.localhost:8400"),
    (b"GET http://app--fn.localhost HTTP/1.1\r\n\r\n", b"/", b"app--fn.localhost"),
    (b"GET http://app--fn.localhost?x=1 HTTP/1.1\r\n\r\n", b"/?x=1", b"app--fn.localhost"),
    (b"GET /path HTTP/1.1\r\nHost: a.localhost\r\n\r\n", b"/path", b"a.localhost"),
])
def test_the_app_gets_the_origin_form_and_the_target_authority_as_host(raw: bytes, target: bytes, host: bytes) -> None:
    req = parsed(raw)
    head = upstream_head(req, b"ip", b"")
    assert head.startswith(b"GET " + target + b" HTTP/1.1\r\n")
    hosts = [line for line in header_lines(head) if line.lower().startswith(b"host:")]
    assert [h.split(b": ", 1)[1] for h in hosts] == [host]


def test_connection_host_does_not_strip_host() -> None:
    req = parsed(b"GET / HTTP/1.1\r\nHost: app--fn.localhost\r\nConnection: host, x-gone\r\nX-Gone: 1\r\n\r\n")
    lines = header_lines(upstream_head(req, b"ip", b""))
    assert b"Host: app--fn.localhost" in lines
    assert not any(line.lower().startswith(b"x-gone") for line in lines)


# -- a stopping server (issue 11, point 3) -----------------------------------------------------------
def drained(raw: bytes, *, grace_over: bool) -> tuple[MockTransport, str]:
    async def main() -> tuple[MockTransport, str]:
        transport = MockTransport()
        conn = ClientConnection(GatewayState({"known": Waiting()}, UpstreamPool(), 1024))
        conn.connection_made(transport)
        if raw:
            conn.data_received(raw)
        await asyncio.sleep(0)
        conn.drain()
        ended = conn.give_up(30) if grace_over else ""
        await asyncio.sleep(0)
        conn.connection_lost(None)
        return transport, ended

    return asyncio.run(main())


def test_a_drain_closes_an_idle_connection_at_once() -> None:
    t, _ = drained(b"", grace_over=False)
    assert t.closed and t.written == b""


def test_a_request_still_waiting_when_the_grace_ends_gets_503_and_the_connection_closes() -> None:
    t, ended = drained(b"GET /known/ HTTP/1.1\r\nHost: x\r\n\r\n", grace_over=True)
    assert ended == "503"
    assert statuses(t.written) == [b"503"]
    assert b"connection: close" in t.written and b"retry-after: 1" in t.written.lower()
    assert b"shutdown grace" in t.written
    assert t.closed


def test_a_busy_connection_is_left_to_finish_its_request() -> None:
    t, _ = drained(b"GET /known/ HTTP/1.1\r\nHost: x\r\n\r\n", grace_over=False)
    assert t.written == b"" and not t.closed

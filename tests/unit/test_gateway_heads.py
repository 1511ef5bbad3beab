"""Heads the gateway rewrites: the request toward the container, the response toward the client."""
from __future__ import annotations

import httptools
import pytest

from wisp.server.gateway.request import Request, is_websocket, read_headers, upstream_head
from wisp.server.gateway.response_head import AS_IS, CHUNKED, NO_BODY, UNTIL_CLOSE, client_head, switching_head


def parsed(raw: bytes) -> Request:
    """A Request as the client protocol fills it in."""
    req = Request()

    class Callbacks:
        def on_url(self, url: bytes) -> None:
            req.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            req.headers.append((name, value))

    parser = httptools.HttpRequestParser(Callbacks())
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # the head is complete; what follows an upgrade is not HTTP
    req.method = parser.get_method()
    read_headers(req)
    return req


def header_lines(head: bytes) -> list[bytes]:
    return head.split(b"\r\n")[1:-2]


def test_upstream_head_keeps_target_and_host_and_sets_proxy_headers() -> None:
    req = parsed(
        b"GET /app/x?q=1 HTTP/1.1\r\nHost: app.localhost:8000\r\nX-Custom: a\r\n"
        b"Connection: keep-alive\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\n"
        b"Trailer: X\r\nUpgrade: websocket\r\nX-Forwarded-Proto: https\r\n"
        b"X-Wisp-Root-Path: /evil\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
        b"X-Wisp-Request-Id: forged\r\n\r\n"
    )
    req.request_id = b"abc-1"
    head = upstream_head(req, b"10.0.0.9", b"/app")
    assert head.startswith(b"GET /app/x?q=1 HTTP/1.1\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert header_lines(head) == [
        b"Host: app.localhost:8000",
        b"X-Custom: a",
        b"x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9",
        b"x-forwarded-proto: http",
        b"x-wisp-root-path: /app",
        b"x-wisp-request-id: abc-1",
    ]


def test_headers_named_in_connection_are_hop_by_hop_too() -> None:
    req = parsed(b"GET / HTTP/1.1\r\nX-Before: 1\r\nConnection: keep-alive, X-Before\r\nConnection: x-after\r\n"
                 b"X-After: 2\r\nX-Kept: 3\r\n\r\n")
    lines = header_lines(upstream_head(req, b"ip", b""))
    assert lines[0] == b"X-Kept: 3"
    assert not any(line.lower().startswith((b"x-before", b"x-after", b"connection")) for line in lines)


def test_a_web_server_gets_the_path_without_the_prefix() -> None:
    for raw, expected in [(b"/app/x?q=1", b"/x?q=1"), (b"/app", b"/"), (b"/app?q", b"/?q"), (b"/app/", b"/")]:
        req = parsed(b"GET " + raw + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        head = upstream_head(req, b"ip", b"/app", strip_prefix=True)
        assert head.startswith(b"GET " + expected + b" HTTP/1.1\r\n")
        assert b"x-forwarded-prefix: /app\r\n" in head and b"x-wisp-root-path: \r\n" in head
    host_form = parsed(b"GET /x HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
    head = upstream_head(host_form, b"ip", b"", strip_prefix=True)
    assert head.startswith(b"GET /x HTTP/1.1\r\n") and b"x-forwarded-prefix" not in head


def test_upstream_head_reframes_the_body() -> None:
    fixed = parsed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert fixed.expect_continue and fixed.has_body
    assert header_lines(upstream_head(fixed, b"ip", b"")) == [
        b"x-forwarded-for: ip", b"x-forwarded-proto: http", b"x-wisp-root-path: ", b"x-wisp-request-id: ",
        b"content-length: 5",
    ]
    chunked = parsed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert chunked.chunked and chunked.has_body
    assert header_lines(upstream_head(chunked, b"ip", b""))[-1] == b"transfer-encoding: chunked"
    bodyless = parsed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert not bodyless.has_body
    assert header_lines(upstream_head(bodyless, b"ip", b""))[-1] == b"x-wisp-request-id: "


def test_a_websocket_handshake_keeps_its_upgrade_and_others_lose_it() -> None:
    ws = parsed(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n"
                b"Sec-WebSocket-Key: k\r\nSec-WebSocket-Protocol: a, b\r\n\r\n")
    assert is_websocket(ws)
    ws.websocket = True
    lines = header_lines(upstream_head(ws, b"ip", b""))
    assert lines[-2:] == [b"connection: upgrade", b"upgrade: WebSocket"]
    assert b"Sec-WebSocket-Protocol: a, b" in lines
    h2c = parsed(b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n")
    assert not is_websocket(h2c)
    assert not any(line.lower().startswith((b"upgrade", b"connection")) for line in header_lines(upstream_head(h2c, b"ip", b"")))
    with_body = parsed(b"POST / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\n")
    assert not is_websocket(with_body)


UPSTREAM = [(b"Content-Type", b"text/plain"), (b"Connection", b"keep-alive"), (b"Keep-Alive", b"5")]
LENGTH = [(b"Content-Length", b"3")]
CHUNKED_TE = [(b"Transfer-Encoding", b"chunked")]

# status, extra headers, HEAD?, HTTP/1.1?, client keep-alive -> framing, keep-alive, until_eof
CASES = [
    (200, LENGTH, False, True, True, AS_IS, True, False),
    (200, CHUNKED_TE, False, True, True, CHUNKED, True, False),
    (200, [], False, True, True, CHUNKED, True, True),
    (200, [], False, False, True, UNTIL_CLOSE, False, True),
    (200, LENGTH, False, False, True, AS_IS, True, False),
    (200, LENGTH, False, True, False, AS_IS, False, False),
    (200, LENGTH, True, True, True, NO_BODY, True, False),
    (204, [], False, True, True, NO_BODY, True, False),
    (304, [], False, True, True, NO_BODY, True, False),
]


@pytest.mark.parametrize(("status", "extra", "head", "http11", "keep", "framing", "keep_after", "until_eof"), CASES)
def test_client_head_framing(status: int, extra: list[tuple[bytes, bytes]], head: bool, http11: bool,
                             keep: bool, framing: int, keep_after: bool, until_eof: bool) -> None:
    out = client_head(status, b"", UPSTREAM + extra, head_request=head, http11=http11, keep_alive=keep)
    assert (out.framing, out.keep_alive, out.until_eof) == (framing, keep_after, until_eof)
    lines = out.head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 %d " % status)
    names = [line.split(b":")[0].lower() for line in lines[1:] if line]
    assert b"keep-alive" not in names
    assert names.count(b"connection") == (0 if keep_after and http11 else 1)
    assert (b"transfer-encoding" in names) == (framing == CHUNKED)
    assert (b"content-length" in names) == (extra == LENGTH)


def test_client_head_keeps_the_reason_phrase_or_supplies_one() -> None:
    assert client_head(418, b"Teapot", [], head_request=False, http11=True, keep_alive=True).head.startswith(
        b"HTTP/1.1 418 Teapot\r\n")
    assert client_head(404, b"", [], head_request=False, http11=True, keep_alive=True).head.startswith(
        b"HTTP/1.1 404 Not Found\r\n")


def test_client_head_carries_the_request_id() -> None:
    out = client_head(200, b"", LENGTH, head_request=False, http11=True, keep_alive=True, request_id=b"ab-7")
    assert b"\r\nx-wisp-request-id: ab-7\r\n" in out.head


def test_switching_head_keeps_upgrade_and_drops_other_hop_by_hop_headers() -> None:
    head = switching_head(b"", [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"Keep-Alive", b"1"),
                                (b"Sec-WebSocket-Accept", b"xyz"), (b"Sec-WebSocket-Protocol", b"b")], b"ab-1")
    assert head == (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: xyz\r\n"
                    b"Sec-WebSocket-Protocol: b\r\nconnection: upgrade\r\nx-wisp-request-id: ab-1\r\n\r\n")

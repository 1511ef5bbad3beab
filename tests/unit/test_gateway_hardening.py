"""The gateway's own defences (issue 15, point 6): refused framing (smuggling), connection caps,
body-read deadlines. Raw sockets to a real gateway in front of real uvicorn servers (the
harness of test_gateway.py); the framing rules of `read_headers` also as a pure table."""
from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from rawhttp import send_and_read
from wisp.server.gateway.request import (
    CHUNKED_10,
    LENGTH_AND_CHUNKED,
    ONLY_CHUNKED,
    TWO_CODINGS,
    TWO_LENGTHS,
    Request,
    read_headers,
)
from wisp.server.main import GATEWAY_SETTINGS, gateway_options_from_env

from . import test_gateway
from .test_gateway import Harness, get, wait_until

make_harness, harness = test_gateway.make_harness, test_gateway.harness  # the fixtures, shared


def framed(http11: bool, *headers: tuple[bytes, bytes]) -> Request:
    req = Request()
    req.url, req.http11, req.headers = b"/app/", http11, list(headers)
    return req


CL = (b"Content-Length", b"5")
TE = (b"Transfer-Encoding", b"chunked")


@pytest.mark.parametrize(("req", "expected"), [
    (framed(True, CL), None),
    (framed(True, TE), None),
    (framed(True, (b"transfer-encoding", b"Chunked")), None),
    (framed(True, CL, TE), (400, LENGTH_AND_CHUNKED)),
    (framed(True, TE, CL), (400, LENGTH_AND_CHUNKED)),
    (framed(True, CL, CL), (400, TWO_LENGTHS)),
    (framed(True, TE, TE), (400, TWO_CODINGS)),
    (framed(True, (b"Transfer-Encoding", b"gzip, chunked")), (501, ONLY_CHUNKED)),
    (framed(False, TE), (400, CHUNKED_10)),
    (framed(False, CL), None),
])
def test_a_body_is_framed_one_way_only(req: Request, expected: tuple[int, str] | None) -> None:
    """Checked by the gateway whatever llhttp lets through (it refuses most of these itself)."""
    assert read_headers(req) == expected


def answer(h: Harness, raw: bytes, *, source: str = "127.0.0.1") -> bytes:
    """What the gateway sends back to `raw` before it closes the connection."""
    return send_and_read(h.port, raw, source=source, timeout=10)


def payload(data: bytes) -> dict[str, object]:
    result: dict[str, object] = json.loads(data.partition(b"\r\n\r\n")[2])
    return result


HEAD = b"POST /app/sha HTTP/1.1\r\nHost: x\r\n"
SMUGGLED = b"GET /app/echo HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(("raw", "status", "said"), [
    (HEAD + b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400,
     "Content-Length"),
    (HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED, 400, "Content-Length"),
    (HEAD + b"Content-Length: 5\r\nContent-Length: 41\r\n\r\nhello" + SMUGGLED, 400, "Duplicate Content-Length"),
    (HEAD + b"Content-Length: 5, 5\r\n\r\nhello", 400, "Content-Length"),
    (HEAD + b"Content-Length: +5\r\n\r\nhello", 400, "Content-Length"),
    (HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "Transfer-Encoding"),
    (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "Transfer-Encoding: chunked"),
    (HEAD + b"Transfer-Encoding: xchunked\r\n\r\n", 501, "Transfer-Encoding: chunked"),
    (b"POST /app/sha HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "chunk size"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400, "Chunk size"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, "chunk"),
    (b"GET /app/echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n", 400, "whitespace"),
    (b"GET /app/echo HTTP/1.1\r\nHost : x\r\n\r\n", 400, "header"),
    (b"GET /app/echo HTTP/1.1\nHost: x\n\n", 400, "CRLF"),
])
def test_malformed_framing_is_a_400_naming_the_fault_and_nothing_reaches_the_app(
        harness: Harness, raw: bytes, status: int, said: str) -> None:
    _, record = harness.app("app")
    data = answer(harness, raw)
    assert data.startswith(b"HTTP/1.1 %d " % status), data
    assert b"connection: close" in data.partition(b"\r\n\r\n")[0]
    message = str(payload(data)["error"])
    assert said in message, message
    assert record.requests == 0  # neither the request nor what was smuggled in its body
    assert get(harness, "/app/echo")[0] == 200  # and the gateway serves on


@contextlib.contextmanager
def open_connections(h: Harness, count: int, source: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    socks = [socket.create_connection(("127.0.0.1", h.port), timeout=10, source_address=(source, 0))
             for _ in range(count)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_past_the_total_cap_is_503_and_closed(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(max_connections=3)
    h.app("app")
    with open_connections(h, 3) as held:
        wait_until(lambda: len(h.gateway._state.connections) == 3)
        data = answer(h, SMUGGLED, source="127.0.0.2")
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert b"retry-after: 1" in data.lower() and "WISP_MAX_CONNECTIONS" in str(payload(data)["error"])
        # The ones admitted are served.
        held[0].sendall(b"GET /app/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert held[0].recv(12) == b"HTTP/1.1 200"
    wait_until(lambda: h.gateway._state.admitted == 0)  # every one counted out again
    assert get(h, "/app/echo")[0] == 200


def test_a_client_address_past_its_cap_is_503_while_others_are_served(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness(max_client_connections=2)
    h.app("app")
    with open_connections(h, 2, "127.0.0.3"):
        wait_until(lambda: h.gateway._state.by_client.get(b"127.0.0.3") == 2)
        data = answer(h, SMUGGLED, source="127.0.0.3")
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert "WISP_MAX_CLIENT_CONNECTIONS" in str(payload(data)["error"])
        assert answer(h, b"GET /app/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                      source="127.0.0.4").startswith(b"HTTP/1.1 200")
    wait_until(lambda: b"127.0.0.3" not in h.gateway._state.by_client)
    assert answer(h, b"GET /app/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                  source="127.0.0.3").startswith(b"HTTP/1.1 200")


def test_a_body_that_stalls_is_408_and_closed(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    h.gateway.body_timeout = 0.5
    _, record = h.app("app")
    with contextlib.closing(socket.create_connection(("127.0.0.1", h.port), timeout=10)) as sock:
        sock.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert "no byte of it came for 0.5 s" in str(payload(data)["error"])
    assert time.monotonic() - started < 8  # generous: the sweep's precision is a fraction of the timeout
    assert get(h, "/app/echo")[0] == 200
    assert record.requests >= 1


def test_a_slow_but_steady_body_is_served(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    h.gateway.body_timeout = 0.5
    h.app("app")
    with contextlib.closing(socket.create_connection(("127.0.0.1", h.port), timeout=10)) as sock:
        sock.sendall(HEAD + b"Content-Length: 12\r\nConnection: close\r\n\r\n")
        for _ in range(12):  # 1.2 s in all, more than the deadline, but never 0.5 s without a byte
            time.sleep(0.1)
            sock.sendall(b"y")
        data = sock.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert payload(data)["size"] == 12


def test_a_client_waiting_for_100_continue_is_not_timed_out(make_harness: Callable[..., Harness]) -> None:
    """Waiting for a container is the gateway's delay, not the client's stall."""
    h = make_harness()
    h.gateway.body_timeout = 0.3
    target, _ = h.app("app")
    target.delay = 1.0  # the container comes after three deadlines
    with contextlib.closing(socket.create_connection(("127.0.0.1", h.port), timeout=10)) as sock:
        sock.sendall(HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        assert sock.recv(25).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        data = sock.makefile("rb").read()
    assert data.startswith(b"\r\n\r\nHTTP/1.1 200") or data.startswith(b"HTTP/1.1 200"), data


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, {}),
    ({"WISP_MAX_CONNECTIONS": "100", "WISP_MAX_CLIENT_CONNECTIONS": "0", "WISP_BODY_TIMEOUT": "2.5"},
     {"max_connections": 100, "max_client_connections": 0, "body_timeout": 2.5}),
    ({"WISP_REDIRECT_AFTER": "5", "WISP_RESULT_TTL": "0"}, {"redirect_after": 5.0, "result_ttl": 0.0}),
    ({"WISP_MAX_CONNECTIONS": "-1"}, "WISP_MAX_CONNECTIONS='-1' must be a number of connections"),
    ({"WISP_MAX_CLIENT_CONNECTIONS": "1.5"}, "WISP_MAX_CLIENT_CONNECTIONS='1.5'"),
    ({"WISP_BODY_TIMEOUT": "0"}, "WISP_BODY_TIMEOUT='0' must be a number of seconds, above 0"),
    ({"WISP_BODY_TIMEOUT": "nan"}, "WISP_BODY_TIMEOUT='nan'"),
    ({"WISP_REDIRECT_AFTER": "soon"}, "WISP_REDIRECT_AFTER='soon'"),
])
def test_gateway_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str],
                                               expected: dict[str, float] | str) -> None:
    for name, *_ in GATEWAY_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        with pytest.raises(SystemExit, match=re.escape(expected)):
            gateway_options_from_env()
    else:
        assert gateway_options_from_env() == expected

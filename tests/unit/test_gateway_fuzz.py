"""Fuzzing the gateway's request parsing over real sockets (issue 15, point 6).

Hypothesis sends random bytes and mutated valid requests to a running gateway (in front of a
real uvicorn app), one connection each. Whatever it sends, the gateway answers with HTTP or
closes, never a 500, logs no error of its own, and keeps serving: a normal request gets 200
along the way and at the end, and every connection is counted out again. Bounded in time:
WISP_FUZZ_SECONDS (default 12, on each of the two event loops) over at most WISP_FUZZ_EXAMPLES
examples (default 3000).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import test_gateway
from .test_gateway import Harness, get, wait_until

make_harness = test_gateway.make_harness  # the fixture, shared

SECONDS = float(os.environ.get("WISP_FUZZ_SECONDS", "12"))
EXAMPLES = int(os.environ.get("WISP_FUZZ_EXAMPLES", "3000"))

VALID = [
    b"GET /app/echo HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /app/echo?q=1 HTTP/1.1\r\nHost: app.localhost\r\nConnection: keep-alive\r\nX-A: b\r\n\r\n",
    b"POST /app/sha HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /app/sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /app/sha HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    b"GET /app/echo HTTP/1.1\r\nHost: x\r\n\r\nGET /app/echo HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://app.localhost/echo HTTP/1.1\r\nHost: y\r\n\r\n",
    b"HEAD /app/echo HTTP/1.0\r\n\r\n",
    b"GET /app/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
]
TOKENS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"\x00", b"\xff", b"0", b"-1", b"ffffffffffffffffff",
          b"Content-Length: 7\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: z\r\n", b" folded\r\n",
          b"HTTP/1.1", b"HTTP/2.0", b"\r\n\r\n", b"%00", b"/../"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with a few edits: bytes inserted, deleted, replaced or repeated."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if edit == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[at: at + draw(st.integers(1, 8))]
        elif edit == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = data[at: at + draw(st.integers(1, 40))]
    return bytes(data)


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@pytest.fixture
def gateway_errors() -> Iterator[Errors]:
    errors = Errors()
    logger = logging.getLogger("wisp.gateway")
    logger.addHandler(errors)
    yield errors
    logger.removeHandler(errors)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads whatever body comes and answers 200: any other status is the gateway's."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def send(h: Harness, data: bytes) -> bytes:
    """Send `data` on a fresh connection; what came back within a moment (or until closed)."""
    with contextlib.closing(socket.create_connection(("127.0.0.1", h.port), timeout=5)) as sock:
        sock.settimeout(0.05)
        got = b""
        with contextlib.suppress(OSError):
            sock.sendall(data)
            while chunk := sock.recv(65536):
                got += chunk
    return got


def test_the_gateway_survives_random_and_mutated_requests(make_harness: Callable[..., Harness],
                                                           gateway_errors: Errors) -> None:
    h = make_harness(max_body_size=64 * 1024)
    h.gateway.head_timeout = 1.0
    h.gateway.body_timeout = 1.0
    h.serve("app", app)
    end = time.monotonic() + SECONDS
    seen = {"examples": 0}
    loop_errors: list[dict[str, object]] = []
    h.loop.call_soon_threadsafe(h.loop.set_exception_handler, lambda _loop, context: loop_errors.append(context))

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=512) | mutated())
    def fuzz(data: bytes) -> None:
        if time.monotonic() > end:
            return  # the time budget is spent: the remaining examples are no-ops
        seen["examples"] += 1
        got = send(h, data)
        if got:
            assert got.startswith(b"HTTP/1.1 "), got[:200]
            assert not got.startswith((b"HTTP/1.1 500", b"HTTP/1.1 502")), got[:400]
        if seen["examples"] % 100 == 0:
            assert get(h, "/app/echo")[0] == 200

    fuzz()
    assert seen["examples"] >= 50, "too few examples ran to mean anything"
    assert get(h, "/app/echo")[0] == 200
    assert gateway_errors.records == []
    assert loop_errors == []
    wait_until(lambda: h.gateway._state.admitted == 0, timeout=10)  # every connection counted out

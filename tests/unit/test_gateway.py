"""The gateway between real HTTP clients and real uvicorn servers on Unix sockets.

The gateway, the upstream servers and the fake targets run on an event loop in a background
thread; each test talks to the gateway with blocking stdlib clients from the test thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import uvicorn
import uvloop
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wisp.server.gateway import Gateway, PlainTarget, TargetUnavailable
from wisp.server.gateway._target import Deliver

T = TypeVar("T")
SMALL_LIMIT = 64 * 1024


# -- a fake Target that hands out leases on one socket and records what comes back ----------
class FakeLease:
    def __init__(self, target: FakeTarget) -> None:
        self.target = target
        self.socket_path = target.socket_path

    def release(self, *, broken: bool = False, status: int | None = None) -> None:
        self.target.releases.append(broken)
        self.target.statuses.append(status)

    def failure(self) -> str | None:
        return None

    def long_lived(self) -> None:
        self.target.long_lived += 1


class FakeTarget(PlainTarget):
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.timeout = 300.0
        self.releases: list[bool] = []  # one entry per release: was it broken?
        self.statuses: list[int | None] = []  # the status passed with each release
        self.acquired = 0
        self.granted = 0
        self.long_lived = 0  # leases told they may last (WebSocket handshakes)
        self.cancelled = 0
        self.delay = 0.0
        self.stubborn = False  # finishes acquiring even when cancelled (a racing pool)
        self.unavailable: TargetUnavailable | None = None

    def try_acquire(self) -> FakeLease | None:
        """Like the pool: a lease at once when nothing would make acquire() wait or fail."""
        if self.delay or self.unavailable is not None:
            return None
        self.acquired += 1
        self.granted += 1
        return FakeLease(self)

    async def acquire(self) -> FakeLease:
        self.acquired += 1
        if self.delay:
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                if not self.stubborn:
                    raise
        if self.unavailable is not None:
            raise self.unavailable
        self.granted += 1
        return FakeLease(self)


# -- the app inside the "container" ----------------------------------------------------------
class AppRecord:
    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.forever_ended = threading.Event()


def make_app(record: AppRecord) -> Callable[..., Awaitable[None]]:
    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse({
            "method": request.method,
            "path": request.scope["path"],
            "query": request.scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
            "body": body.decode("latin-1"),
        })

    async def sha(request: Request) -> Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"size": size, "sha256": digest.hexdigest()})

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                await asyncio.sleep(0.01)
                yield b"chunk-%d\n" % i
        return StreamingResponse(chunks(), media_type="text/plain")

    async def big(request: Request) -> Response:
        return StreamingResponse(pattern(int(request.query_params["n"])))

    async def forever(request: Request) -> Response:
        async def ticks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"tick\n"
                    await asyncio.sleep(0.02)
            finally:
                record.forever_ended.set()
        return StreamingResponse(ticks())

    async def slow_sha(request: Request) -> Response:
        await asyncio.sleep(0.3)  # the body piles up in front of the app meanwhile
        return await sha(request)

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    handlers = {"echo": echo, "sha": sha, "stream": stream, "big": big, "forever": forever, "empty": empty,
                "slow-sha": slow_sha}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        record.requests += 1
        name = scope["path"].rstrip("/").rpartition("/")[2]
        response = await handlers.get(name, echo)(Request(scope, receive))
        await response(scope, receive, send)

    return app


async def pattern(n: int) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * 256
    while n > 0:
        yield block[: min(n, len(block))]
        n -= len(block)


def pattern_sha(n: int) -> str:
    block, digest = bytes(range(256)) * 256, hashlib.sha256()
    while n > 0:
        digest.update(block[: min(n, len(block))])
        n -= len(block)
    return digest.hexdigest()


def counting_protocol(record: AppRecord) -> type[HttpToolsProtocol]:
    class Counting(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            record.connections += 1
            super().connection_made(transport)
    return Counting


# -- the harness -----------------------------------------------------------------------------
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Harness:
    def __init__(self, tmp_path: Path, loop: str, max_body_size: int, idle_timeout: float,
                 **options: float) -> None:
        self.tmp_path = tmp_path
        self.routes: dict[str, FakeTarget] = {}
        self.loop = uvloop.new_event_loop() if loop == "uvloop" else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway = Gateway(self.routes, max_body_size=max_body_size, **options)
        self.gateway.idle_timeout = idle_timeout
        self.call(self.gateway.start("127.0.0.1", 0))
        self.port = self.gateway.port
        self._stops: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def app(self, label: str) -> tuple[FakeTarget, AppRecord]:
        """A uvicorn server running the test app, routed as `label`."""
        record = AppRecord()
        return self.serve(label, make_app(record), http=counting_protocol(record)), record

    def serve(self, label: str, app: Any, **config: Any) -> FakeTarget:
        """A uvicorn server running `app` on a Unix socket, routed as `label`."""
        path = str(self.tmp_path / f"{label}.sock")
        config.setdefault("ws", "none")
        server = uvicorn.Server(uvicorn.Config(app, uds=path, log_level="warning", lifespan="off", **config))

        async def start() -> asyncio.Task[None]:
            task = asyncio.ensure_future(server.serve())
            while not server.started:
                await asyncio.sleep(0.005)
            return task

        task = self.call(start())

        async def stop() -> None:
            server.should_exit = True
            await task
        self._stops.append(stop)
        return self.target(label, path)

    def raw(self, label: str, handler: RawHandler) -> FakeTarget:
        """A misbehaving upstream: `handler` speaks (or fails to speak) HTTP itself."""
        path = str(self.tmp_path / f"{label}.sock")
        writers: set[asyncio.StreamWriter] = set()

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.add(writer)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = self.call(asyncio.start_unix_server(tracked, path))

        async def stop() -> None:
            server.close()
            for writer in writers:
                writer.close()
            await server.wait_closed()
        self._stops.append(stop)
        return self.target(label, path)

    def target(self, label: str, path: str) -> FakeTarget:
        target = self.routes[label] = FakeTarget(path)
        return target

    def client(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    @contextlib.contextmanager
    def raw_client(self) -> Iterator[socket.socket]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            yield sock
        finally:
            # shutdown() closes the connection even while a makefile() reader still holds the fd.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.call(self.gateway.close())
        for stop in self._stops:
            self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def make_harness(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Harness]]:
    """Every test runs on the default loop (tests, embedded use) and on uvloop (the server)."""
    made: list[Harness] = []

    def make(max_body_size: int = 100 * 1024 * 1024, idle_timeout: float = 75.0, **options: float) -> Harness:
        made.append(Harness(tmp_path, request.param, max_body_size, idle_timeout, **options))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture
def small(make_harness: Callable[..., Harness]) -> Harness:
    """A gateway whose body limit is SMALL_LIMIT."""
    return make_harness(max_body_size=SMALL_LIMIT)


def get(h: Harness, path: str, host: str | None = None, method: str = "GET",
        body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = h.client()
    try:
        all_headers = dict(headers or {})
        if host is not None:
            all_headers["Host"] = host
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def seen_headers(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        out.setdefault(name, []).append(value)
    return out


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def assert_releases(target: FakeTarget, expected: list[bool]) -> None:
    """Releases happen on the gateway's thread, maybe just after the client has its answer."""
    try:
        wait_until(lambda: len(target.releases) >= len(expected), timeout=5)
    finally:
        time.sleep(0.02)  # a second, wrong release would show up by now
        assert target.releases == expected


class ResponseStream:
    """Reads successive responses from one socket (http.client reads ahead, so share a buffer)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def makefile(self, mode: str) -> ResponseStream:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        pass  # each response "closes" its file; the socket's buffer must outlive it

    def next(self) -> http.client.HTTPResponse:
        resp = http.client.HTTPResponse(self)  # type: ignore[arg-type]
        resp.begin()
        return resp


def read_response(sock: socket.socket) -> http.client.HTTPResponse:
    return ResponseStream(sock).next()


def recv_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data



# -- routing and forwarding ------------------------------------------------------------------
def test_path_form_forwards_full_path_query_and_proxy_headers(harness: Harness) -> None:
    target, _ = harness.app("app")
    status, _, body = get(harness, "/app/echo?x=1&y=two", headers={
        "X-Wisp-Root-Path": "/evil", "X-Forwarded-For": "10.0.0.1", "X-Custom": "kept",
        "Connection": "keep-alive", "Keep-Alive": "timeout=5",
    })
    assert status == 200
    seen = json.loads(body)
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/app/echo", "x=1&y=two")
    h = seen_headers(body)
    assert h["x-wisp-root-path"] == ["/app"]
    assert h["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-custom"] == ["kept"]
    assert h["host"] == [f"127.0.0.1:{harness.port}"]
    assert "connection" not in h and "keep-alive" not in h
    assert_releases(target, [False])


def test_host_form_routes_with_empty_root_path_and_wins_over_path(harness: Harness) -> None:
    harness.app("app")
    other, _ = harness.app("other")
    status, _, body = get(harness, "/other/echo", host=f"app.localhost:{harness.port}")
    assert status == 200
    assert json.loads(body)["path"] == "/other/echo"
    assert seen_headers(body)["x-wisp-root-path"] == [""]
    assert seen_headers(body)["host"] == [f"app.localhost:{harness.port}"]
    assert other.acquired == 0


def test_unknown_label_is_404_listing_the_labels(harness: Harness) -> None:
    harness.app("b-app")
    harness.app("a-app")
    status, headers, body = get(harness, "/nope/x")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    payload = json.loads(body)
    assert payload["error"] == "No web endpoint is served at this address."
    assert payload["labels"] == ["a-app", "b-app"]
    assert f"http://<label>.localhost:{harness.port}/" in payload["hint"]


def test_labels_added_after_start_are_routed(harness: Harness) -> None:
    assert get(harness, "/late/echo")[0] == 404
    harness.app("late")
    assert get(harness, "/late/echo")[0] == 200


# -- bodies ----------------------------------------------------------------------------------
def test_post_json_with_content_length(harness: Harness) -> None:
    harness.app("app")
    payload = json.dumps({"x": 42, "name": "wisp"}).encode()
    status, _, body = get(harness, "/app/echo", method="POST", body=payload,
                          headers={"Content-Type": "application/json"})
    assert status == 200
    seen = json.loads(body)
    assert json.loads(seen["body"]) == {"x": 42, "name": "wisp"}
    assert seen_headers(body)["content-length"] == [str(len(payload))]


def test_chunked_request_body_is_rechunked(harness: Harness) -> None:
    harness.app("app")
    with harness.raw_client() as sock:
        sock.sendall(b"POST /app/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        time.sleep(0.05)
        sock.sendall(b"7\r\n, world\r\n0\r\n\r\n")
        resp = read_response(sock)
        body = resp.read()
    assert resp.status == 200
    assert json.loads(body)["body"] == "hello, world"
    assert seen_headers(body)["transfer-encoding"] == ["chunked"]


def test_streamed_response_arrives_intact_and_chunked(harness: Harness) -> None:
    harness.app("app")
    conn = harness.client()
    conn.request("GET", "/app/stream")
    resp = conn.getresponse()
    assert resp.getheader("transfer-encoding") == "chunked"
    assert resp.read() == b"".join(b"chunk-%d\n" % i for i in range(5))
    conn.close()


def test_head_has_no_body_and_the_connection_goes_on(harness: Harness) -> None:
    target, record = harness.app("app")
    conn = harness.client()
    conn.request("HEAD", "/app/echo")
    resp = conn.getresponse()
    assert resp.status == 200
    assert int(resp.getheader("content-length", "0")) > 0
    assert resp.read() == b""
    conn.request("GET", "/app/echo")
    assert conn.getresponse().read().startswith(b"{")
    conn.close()
    assert_releases(target, [False, False])
    # The HEAD's container connection is closed rather than reused.
    assert record.connections == 2


def test_204_has_no_body(harness: Harness) -> None:
    harness.app("app")
    conn = harness.client()
    for _ in range(2):
        conn.request("GET", "/app/empty")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (204, b"")
    conn.close()


def test_content_length_over_limit_is_413_without_a_container(small: Harness) -> None:
    target, _ = small.app("app")
    status, headers, body = get(small, "/app/echo", method="POST", body=b"x" * (SMALL_LIMIT + 1))
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert "limit" in json.loads(body)["error"]
    assert target.acquired == 0


def test_chunked_body_over_limit_is_413_and_closed(small: Harness) -> None:
    target, _ = small.app("app")
    with small.raw_client() as sock:
        sock.sendall(b"POST /app/sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 16384
        for _ in range(SMALL_LIMIT // len(piece) + 1):
            sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in data
    # The limit may be passed before or after a lease arrives; either way none is kept.
    wait_until(lambda: len(target.releases) == target.granted)
    assert_releases(target, [False] * target.granted)


def test_large_body_is_fine_under_the_limit(small: Harness) -> None:
    small.app("app")
    status, _, body = get(small, "/app/sha", method="POST", body=b"y" * SMALL_LIMIT)
    assert (status, json.loads(body)["size"]) == (200, SMALL_LIMIT)


def test_expect_100_continue_is_answered_by_the_gateway(harness: Harness) -> None:
    harness.app("app")
    with harness.raw_client() as sock:
        sock.sendall(b"POST /app/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        resp = read_response(sock)
        body = resp.read()
    assert resp.status == 200
    assert json.loads(body)["body"] == "hello"
    assert "expect" not in seen_headers(body)


def test_large_bodies_stream_both_ways(harness: Harness) -> None:
    harness.app("app")
    size = 50 * 1024 * 1024
    upload = bytes(range(256)) * (size // 256)
    conn = harness.client()
    conn.request("POST", "/app/sha", body=upload)
    assert json.loads(conn.getresponse().read()) == {
        "size": size, "sha256": hashlib.sha256(upload).hexdigest()}
    conn.request("GET", f"/app/big?n={size}")
    resp = conn.getresponse()
    digest, got = hashlib.sha256(), 0
    while chunk := resp.read(1 << 20):
        digest.update(chunk)
        got += len(chunk)
    conn.close()
    assert (got, digest.hexdigest()) == (size, pattern_sha(size))


async def gateway_buffered(gateway: Gateway) -> int:
    """Bytes waiting in the gateway's transport buffers, toward clients and containers."""
    state = gateway._state
    clients = sum(c.transport.get_write_buffer_size() for c in state.connections)
    upstreams = sum(c.transport.get_write_buffer_size() for c in state.pool._open)
    return clients + upstreams


def test_a_slow_client_holds_back_the_response(harness: Harness) -> None:
    harness.app("app")
    size = 50 * 1024 * 1024
    with harness.raw_client() as sock:
        sock.sendall(b"GET /app/big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        stream = ResponseStream(sock)
        resp = stream.next()
        first = resp.read(65536)
        time.sleep(0.2)
        assert harness.call(gateway_buffered(harness.gateway)) < 4 * 1024 * 1024
        rest = len(first)
        while chunk := resp.read(1 << 20):
            rest += len(chunk)
    assert rest == size


def test_a_slow_app_holds_back_the_request_body(harness: Harness) -> None:
    harness.app("app")
    size = 50 * 1024 * 1024
    conn = harness.client()
    sender = threading.Thread(target=conn.request, args=("POST", "/app/slow-sha", b"z" * size))
    sender.start()
    time.sleep(0.2)
    assert harness.call(gateway_buffered(harness.gateway)) < 4 * 1024 * 1024
    sender.join()
    assert json.loads(conn.getresponse().read())["size"] == size
    conn.close()


# -- connections -----------------------------------------------------------------------------
def test_keep_alive_reuses_client_and_upstream_connections(harness: Harness) -> None:
    target, record = harness.app("app")
    conn = harness.client()
    socks = set()
    for i in range(5):
        conn.request("GET", f"/app/echo?i={i}")
        assert json.loads(conn.getresponse().read())["query"] == f"i={i}"
        socks.add(id(conn.sock))
    conn.close()
    assert len(socks) == 1
    assert (record.requests, record.connections) == (5, 1)
    assert_releases(target, [False] * 5)


def test_pipelined_requests_are_answered_in_order(harness: Harness) -> None:
    harness.app("app")
    with harness.raw_client() as sock:
        sock.sendall(b"".join(
            b"POST /app/echo?n=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nb-%d" % (i, i)
            for i in range(3)) + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        stream, bodies = ResponseStream(sock), []
        for _ in range(4):
            resp = stream.next()
            bodies.append((resp.status, json.loads(resp.read())))
    assert [(s, b.get("query"), b.get("body")) for s, b in bodies[:3]] == [
        (200, f"n={i}", f"b-{i}") for i in range(3)]
    assert bodies[3][0] == 404


def test_http10_connection_is_closed_after_the_response(harness: Harness) -> None:
    harness.app("app")
    with harness.raw_client() as sock:
        sock.sendall(b"GET /app/stream HTTP/1.0\r\nHost: x\r\n\r\n")
        data = recv_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"".join(b"chunk-%d\n" % i for i in range(5))


def test_connection_close_is_honoured(harness: Harness) -> None:
    harness.app("app")
    with harness.raw_client() as sock:
        sock.sendall(b"GET /app/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in data.lower()


def test_bad_request_bytes_get_400_and_close(harness: Harness) -> None:
    with harness.raw_client() as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"application/json" in data


def test_idle_client_connections_are_closed(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(idle_timeout=0.2)
    with h.raw_client() as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
    assert time.monotonic() - started < 2


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_head_that_does_not_arrive_in_time_is_408_however_slowly_it_trickles(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    h.gateway.head_timeout = 0.5
    with h.raw_client() as sock:
        sock.sendall(b"GET /app/ HTTP/1.1\r\nHost: x\r\n")
        for _ in range(30):  # a header byte every 0.1 s: always arriving, never whole (slowloris)
            time.sleep(0.1)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 0.5 s" in answer


def test_a_head_in_several_reads_within_the_deadline_is_served(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    h.gateway.head_timeout = 0.5
    h.app("app")
    for _ in range(3):  # each head gets its own deadline
        with h.raw_client() as sock:
            sock.sendall(b"GET /app/echo HTTP/1.1\r\n")
            time.sleep(0.3)
            sock.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
            assert _read_all(sock).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)  # 0.6 s of the connection's life since the first one began


# -- targets and failures --------------------------------------------------------------------
def test_target_unavailable_gives_its_status_and_headers(harness: Harness) -> None:
    target, _ = harness.app("app")
    target.unavailable = TargetUnavailable(503, "`f` is stopping; retry.", {"Retry-After": "1"})
    status, headers, body = get(harness, "/app/echo")
    assert (status, headers["retry-after"]) == (503, "1")
    assert json.loads(body) == {"error": "`f` is stopping; retry."}
    assert_releases(target, [])


def test_connect_failure_is_502_and_a_broken_release(harness: Harness) -> None:
    target = harness.target("gone", str(harness.tmp_path / "missing.sock"))
    status, _, body = get(harness, "/gone/")
    assert status == 502
    assert json.loads(body)["error"].startswith("The container handling this request stopped")
    assert_releases(target, [True])


def test_upstream_closing_before_answering_is_502(harness: Harness) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    target = harness.raw("rude", hang_up)
    status, _, _ = get(harness, "/rude/")
    assert status == 502
    assert_releases(target, [True])


def test_upstream_closing_mid_response_cuts_the_client(harness: Harness) -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()

    target = harness.raw("half", half)
    conn = harness.client()
    conn.request("GET", "/half/")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    assert_releases(target, [True])


def test_upstream_interim_100_is_skipped_and_close_delimited_body_is_rechunked(harness: Harness) -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"the end")

    target = harness.raw("old", old_style)
    conn = harness.client()
    for _ in range(2):  # the client connection survives the close-delimited body
        conn.request("GET", "/old/")
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("transfer-encoding")) == (200, "chunked")
        assert resp.read() == b"until the end"
    conn.close()
    assert_releases(target, [False, False])


@pytest.mark.parametrize("body", [None, b"payload"])
def test_dead_pooled_connection_is_retried_on_a_fresh_one(harness: Harness, body: bytes | None) -> None:
    requests: list[bytes] = []

    async def one_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0] or 0)
        requests.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if len(requests) == 1:
            # Close while the next request sits unread: the gateway sees a reset, as when
            # uvicorn's keep-alive timeout races a reused connection.
            transport = cast(asyncio.Transport, writer.transport)
            transport.pause_reading()
            await asyncio.sleep(0.1)
            transport.abort()
        else:
            await reader.read()

    target = harness.raw("flaky", one_then_hang_up)
    conn = harness.client()
    conn.request("GET", "/flaky/")
    assert conn.getresponse().read() == b"ok"
    conn.request("POST" if body else "GET", "/flaky/", body=body)
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"ok")
    conn.close()
    assert len(requests) == 2
    assert requests[1].endswith(b"\r\n\r\n" + (body or b""))
    assert_releases(target, [False, False])


def test_idle_upstream_closed_by_its_peer_leaves_the_pool(harness: Harness) -> None:
    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)

    target = harness.raw("brief", answer_then_close)
    assert get(harness, "/brief/")[0] == 200
    wait_until(lambda: harness.gateway.pool.idle_count(target.socket_path) == 1)
    wait_until(lambda: harness.gateway.pool.idle_count(target.socket_path) == 0)
    assert get(harness, "/brief/")[0] == 200
    assert_releases(target, [False, False])


def test_release_is_called_once_per_request(harness: Harness) -> None:
    target, _ = harness.app("app")
    conn = harness.client()
    for path in ["/app/echo", "/app/stream", "/app/empty", "/app/sha"]:
        conn.request("POST" if path.endswith("sha") else "GET", path, body=b"abc" if path.endswith("sha") else None)
        conn.getresponse().read()
    conn.request("HEAD", "/app/echo")
    conn.getresponse().read()
    conn.close()
    time.sleep(0.05)
    assert_releases(target, [False] * 5)


# -- clients that leave ----------------------------------------------------------------------
def test_client_leaving_during_acquire_cancels_it(harness: Harness) -> None:
    target, record = harness.app("app")
    target.delay = 5.0
    with harness.raw_client() as sock:
        sock.sendall(b"GET /app/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: target.acquired == 1)
    wait_until(lambda: target.cancelled == 1)
    assert_releases(target, [])
    assert record.requests == 0


def test_lease_granted_after_the_client_left_is_released(harness: Harness) -> None:
    target, record = harness.app("app")
    target.delay = 5.0
    target.stubborn = True
    with harness.raw_client() as sock:
        sock.sendall(b"GET /app/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: target.acquired == 1)
    assert_releases(target, [False])
    time.sleep(0.05)
    assert_releases(target, [False])
    assert record.requests == 0


def test_client_leaving_mid_response_frees_the_lease_and_upstream(harness: Harness) -> None:
    target, record = harness.app("app")
    with harness.raw_client() as sock:
        sock.sendall(b"GET /app/forever HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"tick" in sock.recv(4096) + sock.recv(4096)
    assert_releases(target, [False])
    assert record.forever_ended.wait(5)
    assert harness.gateway.pool.idle_count(target.socket_path) == 0


# -- a target that hands a waiting request its slot inside the release, as FunctionPool does --
class QueueLease:
    def __init__(self, target: QueueTarget) -> None:
        self.target = target
        self.socket_path = target.socket_path
        self._released = False

    def release(self, *, broken: bool = False, status: int | None = None) -> None:
        if not self._released:
            self._released = True
            self.target.freed()

    def failure(self) -> str | None:
        return None

    def long_lived(self) -> None:
        pass


class QueuePlace:
    def __init__(self, queue: deque[Deliver], deliver: Deliver) -> None:
        self.queue = queue
        self.deliver = deliver

    def cancel(self) -> None:
        with contextlib.suppress(ValueError):
            self.queue.remove(self.deliver)


class QueueTarget(PlainTarget):
    def __init__(self, socket_path: str, slots: int) -> None:
        self.socket_path = socket_path
        self.slots = slots
        self.queue: deque[Deliver] = deque()

    def try_acquire(self) -> QueueLease | None:
        if self.slots and not self.queue:
            self.slots -= 1
            return QueueLease(self)
        return None

    def wait(self, deliver: Deliver) -> QueuePlace:
        self.queue.append(deliver)
        return QueuePlace(self.queue, deliver)

    def freed(self) -> None:
        if self.queue:
            self.queue.popleft()(QueueLease(self))
        else:
            self.slots += 1


def request_line(head: bytes) -> bytes:
    return head.partition(b"\r\n")[0]


async def give_up_holder_first(gateway: Gateway) -> None:
    """What `Gateway.drain` does once its grace is over, in one pass, starting with the client
    whose request holds the slot (the order that once handed the freed slot to the next one)."""
    def waits(conn: Any) -> bool:
        exchange = conn._active.exchange if conn._active is not None else None
        return exchange is None or exchange.lease is None
    for conn in sorted(gateway._state.connections, key=waits):
        conn.give_up(0.0)


def test_aborting_several_requests_in_one_pass_sends_none_of_the_waiting_ones(harness: Harness) -> None:
    holds: list[bytes] = []

    async def quick_or_hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if b"/hold " in request_line(head):
                holds.append(head)
                await reader.read()
                return
            await asyncio.sleep(0.2)  # two at once need two connections
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    path = harness.raw("q", quick_or_hold).socket_path
    target = harness.routes["q"] = QueueTarget(path, slots=2)  # type: ignore[assignment]  # the routes' type is the harness's fake
    with ThreadPoolExecutor(2) as pool:
        assert [answer[0] for answer in pool.map(lambda _: get(harness, "/q/quick"), range(2))] == [200, 200]
    wait_until(lambda: harness.gateway.pool.idle_count(path) == 2)
    target.slots = 1  # one request runs, the next ones wait with an idle connection at hand
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(harness.raw_client()) for _ in range(4)]
        clients[0].sendall(b"GET /q/hold HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: len(holds) == 1)
        for client in clients[1:]:
            client.sendall(b"GET /q/hold HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: len(target.queue) == 3)
        harness.call(give_up_holder_first(harness.gateway))
        answers = [recv_until_closed(client) for client in clients]
    assert [answer.partition(b"\r\n")[0] for answer in answers] == [b"HTTP/1.1 503 Service Unavailable"] * 4
    time.sleep(0.2)  # a request sent anyway would have reached the upstream by now
    assert len(holds) == 1


def test_bytes_after_a_response_never_answer_the_request_sent_next_on_its_connection(harness: Harness) -> None:
    seen: list[bytes] = []

    async def extra_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await reader.readuntil(b"\r\n\r\n"))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if len(seen) == 1:
                await asyncio.sleep(0.3)  # the second request queues meanwhile
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbogus")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
            await writer.drain()

    path = harness.raw("x", extra_bytes).socket_path
    target = harness.routes["x"] = QueueTarget(path, slots=1)  # type: ignore[assignment]  # the routes' type is the harness's fake
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(get, harness, "/x/first")
        wait_until(lambda: len(seen) == 1)
        second = pool.submit(get, harness, "/x/second")
        wait_until(lambda: len(target.queue) == 1)
        assert first.result()[::2] == (200, b"ok")
        assert second.result()[::2] == (200, b"second")


def test_a_streamed_response_tells_its_lease_it_may_last_and_a_sized_one_does_not(harness: Harness) -> None:
    target, _ = harness.app("app")
    assert get(harness, "/app/echo")[0] == 200
    assert target.long_lived == 0
    status, headers, body = get(harness, "/app/stream")
    assert (status, headers.get("transfer-encoding"), body.count(b"chunk-")) == (200, "chunked", 5)
    assert target.long_lived == 1

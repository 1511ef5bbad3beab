"""The redirect chain (S7) in process: real sockets, a short window, uvicorn upstreams."""
from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from wisp.server.gateway import calls as calls_module
from wisp.server.gateway.calls import call_param, is_call_id, new_call_id

from .test_gateway import FakeTarget, Harness, assert_releases, get, pattern, pattern_sha, wait_until

WINDOW = 0.2


class Record:
    def __init__(self) -> None:
        self.requests = 0
        self.disconnected = threading.Event()


def make_app(record: Record) -> Callable[..., Any]:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("s", "1")))
        return JSONResponse({"slept": request.query_params.get("s"), "n": record.requests,
                             "body": (await request.body()).decode()})

    async def late_stream(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params["delay"]))

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(int(request.query_params["chunks"])):
                yield b"chunk-%d\n" % i
                await asyncio.sleep(0.1)
        return StreamingResponse(chunks(), media_type="text/plain")

    async def late_big(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params["delay"]))
        return StreamingResponse(pattern(int(request.query_params["n"])))

    async def hang(request: Request) -> Response:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                record.disconnected.set()
                return Response(status_code=499)

    handlers = {"slow": slow, "late-stream": late_stream, "late-big": late_big, "hang": hang}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        record.requests += 1
        name = scope["path"].rstrip("/").rpartition("/")[2]
        response = await handlers[name](Request(scope, receive))
        await response(scope, receive, send)

    return app


@pytest.fixture
def make_window(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Gateways on uvloop only (the server's loop): the chain's logic does not depend on the
    loop, and test_gateway.py already runs the transport handling on both."""
    made: list[Harness] = []

    def make(**options: float) -> Harness:
        made.append(Harness(tmp_path, "uvloop", 100 * 1024 * 1024, 75.0, **options))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.fixture
def window(make_window: Callable[..., Harness]) -> Harness:
    return make_window(redirect_after=WINDOW, result_ttl=0.6)


def served(h: Harness, label: str = "app") -> tuple[FakeTarget, Record]:
    record = Record()
    return h.serve(label, make_app(record)), record


def request(h: Harness, method: str, target: str, body: bytes | None = None) -> http.client.HTTPResponse:
    conn = h.client()
    conn.request(method, target, body=body)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def follow(h: Harness, location: str, limit: int = 50) -> tuple[int, dict[str, str], bytes, int]:
    """GET Location until an answer that is not a 303: (status, headers, body, redirects)."""
    redirects = 0
    while True:
        conn = h.client()
        conn.request("GET", location)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status != 303:
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, redirects
        redirects += 1
        assert redirects < limit
        location = resp.getheader("location") or ""


# -- ids and parameters (pure) -----------------------------------------------------------------
def test_call_ids_are_random_and_recognised() -> None:
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_call_id(i) for i in ids)
    for bad in (b"", b"fc-", b"fc-" + b"g" * 32, b"xx-" + b"a" * 32, b"fc-" + b"a" * 31, b"fc-" + b"A" * 32):
        assert not is_call_id(bad)


@pytest.mark.parametrize(("url", "value"), [
    (b"/a?__wisp_call_id=fc-1", b"fc-1"),
    (b"/a?x=1&__wisp_call_id=fc-1&__wisp_wait=2", b"fc-1"),
    (b"/a/__wisp_call_id=fc-1", None),
    (b"/a?x__wisp_call_id=fc-1", None),
    (b"/a?__wisp_call_id=", b""),
    (b"/a?__modal_function_call_id=fc-2&__wisp_wait=2", b"fc-2"),  # Modal's name for it
    (b"/a?x__modal_function_call_id=fc-2", None),
])
def test_call_param(url: bytes, value: bytes | None) -> None:
    assert call_param(url) == value


# -- the chain -----------------------------------------------------------------------------------
def test_a_slow_response_is_redirected_and_the_chain_ends_in_the_result(window: Harness) -> None:
    target, record = served(window)
    started = time.monotonic()
    first = request(window, "GET", "/app/slow?s=0.6&x=1")
    assert first.status == 303
    assert WINDOW <= time.monotonic() - started < WINDOW + 0.5
    location = first.getheader("location") or ""
    query = parse_qs(urlsplit(location).query)
    assert urlsplit(location).path == "/app/slow" and query["s"] == ["0.6"] and query["x"] == ["1"]
    call_id = query["__wisp_call_id"][0]
    assert is_call_id(call_id.encode())
    status, headers, body, redirects = follow(window, location)
    assert status == 200 and redirects >= 1
    assert json.loads(body)["slept"] == "0.6"
    assert record.requests == 1  # the fetches never reached the container
    assert headers["x-wisp-request-id"]  # the call's original request
    assert_releases(target, [False])


def test_the_303_names_the_call_and_keeps_the_connection(window: Harness) -> None:
    served(window)
    conn = window.client()
    conn.request("GET", "/app/slow?s=0.4")
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    assert resp.status == 303 and payload["status"] == "running"
    assert payload["call_id"] in (resp.getheader("location") or "")
    assert resp.getheader("x-wisp-request-id")
    conn.request("GET", resp.getheader("location") or "")  # same connection
    second = conn.getresponse()
    assert second.status in (200, 303)
    second.read()
    conn.close()


def test_successive_redirects_have_distinct_locations(window: Harness) -> None:
    served(window)
    first = request(window, "GET", "/app/slow?s=0.7")
    seen = [first.getheader("location")]
    while True:
        resp = request(window, "GET", seen[-1] or "")
        if resp.status != 303:
            break
        seen.append(resp.getheader("location"))
    assert len(seen) >= 2 and len(set(seen)) == len(seen)
    assert "__wisp_wait=2" in (seen[1] or "")


def test_urllib_follows_the_chain_to_the_result(window: Harness) -> None:
    served(window)
    with urllib.request.urlopen(f"http://127.0.0.1:{window.port}/app/slow?s=0.6", timeout=10) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["slept"] == "0.6"
        assert "__wisp_call_id=" in resp.url


def test_a_post_is_redirected_with_its_body_already_sent(window: Harness) -> None:
    served(window)
    first = request(window, "POST", "/app/slow?s=0.3", body=b"payload")
    assert first.status == 303
    status, _, body, _ = follow(window, first.getheader("location") or "")
    assert (status, json.loads(body)["body"]) == (200, "payload")


def test_the_result_stays_fetchable_then_expires(window: Harness) -> None:
    served(window)
    location = request(window, "GET", "/app/slow?s=0.3").getheader("location") or ""
    results = [follow(window, location)[:3:2] for _ in range(3)]
    assert results[0] == results[1] == results[2] and results[0][0] == 200
    time.sleep(0.6 + 0.2)  # result_ttl=0.6
    status, _, body, _ = follow(window, location)
    assert status == 404
    assert json.loads(body)["status"] == "expired"
    assert "expired" in json.loads(body)["error"]


@pytest.mark.parametrize(("value", "status", "kind"), [
    ("nonsense", 400, "malformed"),
    ("", 400, "malformed"),
    ("fc-" + "0" * 32, 404, "unknown"),
])
def test_bad_call_ids_never_start_a_call(window: Harness, value: str, status: int, kind: str) -> None:
    _, record = served(window)
    conn = window.client()
    conn.request("GET", f"/app/slow?__wisp_call_id={value}")
    resp = conn.getresponse()
    assert resp.status == status
    assert json.loads(resp.read())["status"] == kind
    conn.close()
    assert record.requests == 0


def test_a_call_id_is_only_good_for_its_own_endpoint(window: Harness) -> None:
    served(window, "app")
    _, other = served(window, "other")
    location = request(window, "GET", "/app/slow?s=0.3").getheader("location") or ""
    status, _, body, _ = follow(window, location.replace("/app/", "/other/"))
    assert (status, json.loads(body)["status"]) == (404, "unknown")
    assert other.requests == 0


def test_the_marker_outside_the_query_is_an_ordinary_request(window: Harness) -> None:
    served(window)
    status, _, _ = get(window, "/app/x/__wisp_call_id=fc-1/slow?s=0")
    assert status == 200


# -- timeouts ------------------------------------------------------------------------------------
def test_a_detached_call_past_its_timeout_is_504_and_the_app_sees_the_disconnect(window: Harness) -> None:
    target, record = served(window)
    target.timeout = 0.6
    first = request(window, "GET", "/app/hang")
    assert first.status == 303
    status, _, body, _ = follow(window, first.getheader("location") or "")
    payload = json.loads(body)
    assert status == 504
    assert payload["status"] == "timeout" and "timeout of 0.6 s" in payload["error"]
    assert record.disconnected.wait(5)
    assert_releases(target, [False])
    assert target.statuses == [504]


def test_a_timeout_shorter_than_the_window_is_504_at_once(make_window: Callable[..., Harness]) -> None:
    h = make_window(redirect_after=5.0)
    target, record = served(h)
    target.timeout = 0.3
    started = time.monotonic()
    status, headers, body = get(h, "/app/hang")
    assert status == 504 and 0.3 <= time.monotonic() - started < 2.5
    assert json.loads(body)["timeout"] == 0.3
    assert headers["x-wisp-request-id"]
    assert record.disconnected.wait(5)
    assert_releases(target, [False])
    assert target.statuses == [504]


# -- what is kept, and how it is read ------------------------------------------------------------
def test_a_large_result_is_kept_on_disk_and_read_whole(window: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calls_module, "MEMORY_LIMIT", 16 * 1024)
    served(window)
    size = 3 * 1024 * 1024 + 17
    location = request(window, "GET", f"/app/late-big?delay=0.3&n={size}").getheader("location") or ""
    call = next(iter(window.gateway.calls._calls.values()))
    wait_until(lambda: call.finished, timeout=10)
    assert call._file is not None and len(call._mem) <= 16 * 1024
    for _ in range(2):  # any number of readers, each from the start
        status, _, body, _ = follow(window, location)
        assert (status, len(body), hashlib.sha256(body).hexdigest()) == (200, size, pattern_sha(size))


def test_a_fetch_follows_a_response_that_is_still_streaming(window: Harness) -> None:
    served(window)
    location = request(window, "GET", "/app/late-stream?delay=0.3&chunks=4").getheader("location") or ""
    while True:
        conn = window.client()
        conn.request("GET", location)
        resp = conn.getresponse()
        if resp.status == 200:
            break
        location = resp.getheader("location") or ""
        resp.read()
        conn.close()
    first = resp.readline()
    arrived = time.monotonic()
    rest = resp.read()
    assert first.startswith(b"chunk-")
    assert time.monotonic() - arrived > 0.15  # the rest was still being made
    assert (first + rest).endswith(b"chunk-3\n")
    conn.close()


def test_head_on_a_call_gets_the_head_only(window: Harness) -> None:
    served(window)
    location = request(window, "GET", "/app/slow?s=0.3").getheader("location") or ""
    follow(window, location)  # finished
    conn = window.client()
    conn.request("HEAD", location)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    conn.request("GET", location)  # the connection goes on
    assert conn.getresponse().status == 200
    conn.close()


def test_calls_are_dropped_when_the_gateway_closes(window: Harness) -> None:
    target, _ = served(window)
    assert request(window, "GET", "/app/hang").status == 303
    assert len(window.gateway.calls) == 1
    window.call(window.gateway.close())
    assert len(window.gateway.calls) == 0
    assert_releases(target, [False])


# -- failures of a detached call -----------------------------------------------------------------
def test_a_container_that_dies_before_answering_leaves_a_502_to_fetch(window: Harness) -> None:
    async def die_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(WINDOW * 2)

    target = window.raw("dies", die_late)
    first = request(window, "GET", "/dies/")
    assert first.status == 303
    status, _, body, _ = follow(window, first.getheader("location") or "")
    assert status == 502 and "stopped before it answered" in json.loads(body)["error"]
    assert_releases(target, [True])


def test_a_response_cut_mid_way_cuts_its_readers(window: Harness) -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(WINDOW * 2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    target = window.raw("half", half)
    location = request(window, "GET", "/half/").getheader("location") or ""
    while True:
        conn = window.client()
        conn.request("GET", location)
        resp = conn.getresponse()
        if resp.status != 303:
            break
        location = resp.getheader("location") or ""
        resp.read()
        conn.close()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    assert_releases(target, [True])


def test_a_call_still_waiting_for_a_container_is_redirected_and_then_served(window: Harness) -> None:
    target, record = served(window)
    target.delay = WINDOW * 2  # a cold start longer than the window
    first = request(window, "GET", "/app/slow?s=0")
    assert first.status == 303 and record.requests == 0
    status, _, _, _ = follow(window, first.getheader("location") or "")
    assert (status, record.requests) == (200, 1)
    assert_releases(target, [False])


def test_a_request_still_sending_its_body_is_not_redirected(window: Harness) -> None:
    served(window)
    with window.raw_client() as sock:
        sock.sendall(b"POST /app/slow?s=0 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde")
        time.sleep(WINDOW * 3)  # the client is slow, not the function
        sock.sendall(b"fghij")
        data = b""
        while b"}" not in data:
            data += sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 ") and b'"body":"abcdefghij"' in data


def test_a_fetch_still_waiting_when_a_drain_gives_up_gets_503(make_window: Callable[..., Harness]) -> None:
    """A client polling a call whose result has not begun, when the server stops: 503, not a
    TypeError in the drain (the fetch's abort once took no status)."""
    h = make_window(redirect_after=1.0, result_ttl=5.0)
    served(h)
    first = request(h, "GET", "/app/slow?s=5")
    assert first.status == 303
    conn = h.client()
    conn.request("GET", first.getheader("location") or "")
    time.sleep(0.2)  # the fetch is waiting for the result, well within its own window
    drained = h.call(h.gateway.drain(0.1))
    resp = conn.getresponse()
    assert resp.status == 503 and resp.getheader("retry-after") == "1"
    assert drained.answered_503 == 1

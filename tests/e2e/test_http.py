"""The whole of HTTP through the gateway, with real containers (issue 5).

One server of its own, with a 2 s redirect window and results kept 4 s, so the chain (S7) can
be followed in seconds; five apps, one per area.
"""
from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from .conftest import REPO, Wisp, admin, free_port, wait_until
from .wsclient import Closed, WebSocket

pytestmark = pytest.mark.e2e
WINDOW = 2.0
RESULT_TTL = 4.0
APPS = ("http_long", "http_stream", "http_bodies", "http_ws", "http_web_server")
BLOCK = bytes(range(256)) * 256


@dataclass
class Http:
    wisp: Wisp
    ports: dict[str, int]

    @property
    def port(self) -> int:
        return self.wisp.port

    def path(self, app: str, function: str, rest: str = "/") -> str:
        return f"/{app}--{function}{rest}"

    def url(self, app: str, function: str, rest: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{self.path(app, function, rest)}"

    def lines(self, name: str) -> list[str]:
        """The events the app of module `name` printed (`[event] ...`), from its log."""
        status, text = admin(self.wisp, f"/v1/apps/{name.replace('_', '-')}/logs")
        assert status == 200, text
        return [line.split("[event] ", 1)[1] for line in text.splitlines() if "[event] " in line]

    def endpoint(self, app: str, function: str) -> dict[str, object]:
        apps = json.loads(admin(self.wisp, "/v1/apps")[1])["apps"]
        found = next(a for a in apps if a["id"] == app)
        return next(e for e in found["endpoints"] if e["function"] == function)

    def client(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    root = tmp_path_factory.mktemp("http")
    wisp = Wisp(root / "home", free_port())
    wisp.env.update(WISP_REDIRECT_AFTER=str(WINDOW), WISP_RESULT_TTL=str(RESULT_TTL),
                    WISP_MAX_BODY_SIZE=str(1 << 30))
    wisp.run("server", "start")
    ports = {name: free_port() for name in ("PORT_FILES", "PORT_WS", "PORT_NEVER")}
    try:
        for name in APPS:
            source = (REPO / f"tests/e2e/apps/{name}.py").read_text()
            for key, port in ports.items():
                source = re.sub(rf"^{key} = \d+", f"{key} = {port}", source, flags=re.M)
            folder = root / name
            folder.mkdir()
            (folder / f"{name}.py").write_text(source)
            if name == "http_web_server":
                (folder / "hello.txt").write_text("hello from a file\n")
            wisp.run("deploy", str(folder / f"{name}.py"))
        yield Http(wisp, ports)
    finally:
        wisp.run("server", "stop", check=False)


def server_pid(h: Http) -> int:
    return h.wisp.server_pid()


# -- 1. the redirect chain (S7) ------------------------------------------------------------------
def test_a_long_call_is_redirected_and_attached_to_never_restarted(h: Http) -> None:
    first = requests.get(h.url("http-long", "slow", "/?seconds=5&tag=chain"), allow_redirects=False, timeout=30)
    assert first.status_code == 303
    location = first.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["seconds"] == ["5"] and query["__wisp_call_id"][0].startswith("fc-")
    assert first.json()["status"] == "running"
    hops = 0
    resp = first
    while resp.status_code == 303:
        hops += 1
        resp = requests.get(f"http://127.0.0.1:{h.port}{resp.headers['location']}", allow_redirects=False, timeout=30)
    assert resp.status_code == 200 and resp.json()["tag"] == "chain"
    assert hops >= 2  # 5 s of work, a 2 s window
    assert h.lines("http_long").count("slow chain started") == 1  # fetches never start a call
    # Kept for a while: fetched again, the same answer; then it expires.
    again = requests.get(f"http://127.0.0.1:{h.port}{location}", timeout=30)
    assert again.json() == resp.json()
    time.sleep(RESULT_TTL + 1.5)
    expired = requests.get(f"http://127.0.0.1:{h.port}{location}", timeout=30)
    assert expired.status_code == 404 and expired.json()["status"] == "expired"
    assert h.lines("http_long").count("slow chain started") == 1


def test_curl_follows_the_chain_and_sees_only_the_result(h: Http) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        ["curl", "-sS", "-L", "-w", "\n%{http_code} %{num_redirects}", h.url("http-long", "slow", "/?seconds=5&tag=curl")],
        capture_output=True, text=True, timeout=60, check=True).stdout
    body, _, tail = out.rpartition("\n")
    code, redirects = tail.split()
    assert code == "200" and int(redirects) >= 2
    assert json.loads(body)["tag"] == "curl"


def test_python_redirect_handling_sees_only_the_result(h: Http) -> None:
    with urllib.request.urlopen(h.url("http-long", "slow", "/?seconds=5&tag=urllib"), timeout=60) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["tag"] == "urllib"
    assert requests.get(h.url("http-long", "slow", "/?seconds=3&tag=requests"), timeout=60).json()["tag"] == "requests"


@pytest.mark.parametrize(("value", "status", "kind"), [("bogus", 400, "malformed"), ("fc-" + "a" * 32, 404, "unknown")])
def test_a_bad_call_id_never_starts_a_call(h: Http, value: str, status: int, kind: str) -> None:
    before = len(h.lines("http_long"))
    resp = requests.get(h.url("http-long", "slow", f"/?seconds=0&tag=bad&__wisp_call_id={value}"), timeout=30)
    assert (resp.status_code, resp.json()["status"]) == (status, kind)
    time.sleep(0.5)
    assert len(h.lines("http_long")) == before


def test_past_its_timeout_a_call_is_504_and_the_app_sees_the_disconnect(h: Http) -> None:
    started = time.monotonic()
    resp = requests.get(h.url("http-long", "capped"), timeout=60)  # follows the 303 at 2 s
    assert resp.status_code == 504
    assert 4 <= time.monotonic() - started < 9
    assert resp.json()["status"] == "timeout" and "timeout of 4 s" in resp.json()["error"]
    wait_until(lambda: "capped saw http.disconnect" in h.lines("http_long"), timeout=10, message="disconnect")


# -- 2. streaming out ----------------------------------------------------------------------------
def arrivals(h: Http, path: str) -> list[tuple[int, float, float]]:
    """(tick number, container's send time, arrival time) for each tick line, as it arrives."""
    seen: dict[int, tuple[float, float]] = {}
    with socket.create_connection(("127.0.0.1", h.port), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            now = time.monotonic()
            data += chunk
            for m in re.finditer(rb"tick (\d+) (\d+\.\d+)\n", data):
                seen.setdefault(int(m.group(1)), (float(m.group(2)), now))
    return [(i, *seen[i]) for i in sorted(seen)]


@pytest.mark.parametrize(("function", "kind"), [("ticks", "StreamingResponse"), ("events", "server-sent events"),
                                                ("flask-ticks", "Flask generator")])
def test_each_chunk_arrives_before_the_next_is_sent(h: Http, function: str, kind: str) -> None:
    ticks = arrivals(h, h.path("http-stream", function))
    assert [i for i, _, _ in ticks] == [0, 1, 2, 3], kind
    for (_, _, arrived), (_, next_sent, _) in itertools.pairwise(ticks):
        assert arrived < next_sent, f"{kind}: a chunk waited for the next one"
    assert max(arrived - sent for _, sent, arrived in ticks) < 0.3, kind  # CLOCK_MONOTONIC is machine-wide


def test_a_client_that_leaves_cancels_the_work(h: Http) -> None:
    with socket.create_connection(("127.0.0.1", h.port), timeout=60) as sock:
        sock.sendall(f"GET {h.path('http-stream', 'endless')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while data.count(b"tick") < 3:
            data += sock.recv(4096)
    wait_until(lambda: "endless saw http.disconnect" in h.lines("http_stream"), timeout=10, message="disconnect")
    wait_until(lambda: h.endpoint("http-stream", "endless")["in_flight"] == 0, timeout=10, message="lease back")


# -- 3. bodies, framing, connections --------------------------------------------------------------
def peak_rss_since_reset(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


def reset_peak(pid: int) -> int:
    """Restart the kernel's peak-RSS count (clear_refs 5); the RSS now."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS of the server process here")
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def test_large_bodies_both_ways_keep_the_gateway_flat(h: Http) -> None:
    size = 300 * 1024 * 1024
    pid = server_pid(h)
    requests.post(h.url("http-bodies", "sha"), data=b"warm", timeout=60)  # containers up first
    requests.get(h.url("http-bodies", "download", "/?n=1"), timeout=60)
    before = reset_peak(pid)

    def blocks() -> Iterator[bytes]:
        for _ in range(size // len(BLOCK)):
            yield BLOCK

    up = requests.post(h.url("http-bodies", "sha"), data=blocks(), timeout=300)  # chunked
    digest = hashlib.sha256()
    for _ in range(size // len(BLOCK)):
        digest.update(BLOCK)
    assert up.json() == {"size": size, "sha256": digest.hexdigest()}

    got, down = 0, hashlib.sha256()
    with requests.get(h.url("http-bodies", "download", f"/?n={size}"), stream=True, timeout=300) as resp:
        for chunk in resp.iter_content(1 << 20):
            got += len(chunk)
            down.update(chunk)
    assert (got, down.hexdigest()) == (size, digest.hexdigest())
    grown = peak_rss_since_reset(pid) - before
    assert grown < 64 * 1024 * 1024, f"the server's peak RSS grew by {grown / 2**20:.0f} MiB"


def test_content_length_upload_and_expect_100_continue(h: Http) -> None:
    body = os.urandom(3 * 1024 * 1024)
    path = h.path("http-bodies", "sha")
    with socket.create_connection(("127.0.0.1", h.port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_head_204_and_304_have_no_body_and_keep_the_connection(h: Http) -> None:
    conn = h.client()
    conn.request("HEAD", h.path("http-bodies", "misc", "/headers"))
    head = conn.getresponse()
    assert (head.status, head.read()) == (200, b"")
    sock = conn.sock
    conn.request("GET", h.path("http-bodies", "misc", "/empty"))
    empty = conn.getresponse()
    assert (empty.status, empty.read()) == (204, b"")
    conn.request("GET", h.path("http-bodies", "misc", "/cached"))
    fresh = conn.getresponse()
    assert (fresh.status, fresh.read()) == (200, b"fresh")
    conn.request("GET", h.path("http-bodies", "misc", "/cached"), headers={"If-None-Match": '"v1"'})
    cached = conn.getresponse()
    assert (cached.status, cached.read(), cached.getheader("etag")) == (304, b"", '"v1"')
    assert conn.sock is sock
    conn.close()


def test_keep_alive_carries_many_requests(h: Http) -> None:
    conn = h.client()
    conn.request("GET", h.path("http-bodies", "misc", "/headers"))
    conn.getresponse().read()
    sock, ids = conn.sock, set()
    for i in range(200):
        conn.request("POST" if i % 2 else "GET", h.path("http-bodies", "misc", "/headers"), body=b"b%d" % i if i % 2 else None)
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["body"] == (f"b{i}" if i % 2 else "")
        ids.add(resp.getheader("x-wisp-request-id"))
    assert conn.sock is sock  # never reconnected
    assert len(ids) == 200
    conn.close()


def test_oversized_request_headers_get_431(h: Http) -> None:
    with socket.create_connection(("127.0.0.1", h.port), timeout=30) as sock:
        sock.sendall(f"GET {h.path('http-bodies', 'misc', '/headers')} HTTP/1.1\r\nHost: x\r\n".encode())
        try:
            for i in range(80):
                sock.sendall(b"X-Big-%d: %s\r\n" % (i, b"y" * 1000))
        except OSError:
            pass  # the gateway may have answered and closed already
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 431 ")


# -- 6. headers ----------------------------------------------------------------------------------
def test_the_app_sees_the_client_headers_and_no_hop_by_hop_ones(h: Http) -> None:
    host = f"http-bodies--misc.localhost:{h.port}"
    resp = requests.get(f"http://127.0.0.1:{h.port}/headers", timeout=30, headers={
        "Host": host, "X-Forwarded-For": "10.1.1.1", "X-Forwarded-Proto": "https", "X-Wisp-Request-Id": "forged",
        "Connection": "keep-alive, X-Hop", "X-Hop": "1", "Keep-Alive": "timeout=5", "TE": "trailers",
        "Proxy-Connection": "keep-alive", "Upgrade": "h2c", "X-Custom": "kept"})
    seen = dict(resp.json()["headers"])
    assert seen["host"] == host
    assert seen["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-wisp-request-id"] == resp.headers["x-wisp-request-id"] != "forged"
    assert seen["x-custom"] == "kept"
    for hop in ("x-hop", "keep-alive", "te", "proxy-connection", "upgrade"):
        assert hop not in seen, hop
    assert seen.get("connection") in (None, "keep-alive")  # uvicorn's own view of the gateway's connection


def exchange_raw(h: Http, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection and read until the gateway closes it."""
    with socket.create_connection(("127.0.0.1", h.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_an_absolute_form_target_routes_by_its_authority_and_reaches_the_app_in_origin_form(h: Http) -> None:
    authority = f"http-bodies--misc.localhost:{h.port}"
    answer = exchange_raw(h, f"GET http://{authority}/headers?x=1 HTTP/1.1\r\nHost: nobody.localhost\r\n"
                             "Connection: close\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    seen = dict(json.loads(body)["headers"])
    assert seen["host"] == authority


def test_two_host_headers_and_a_missing_version_get_400_at_once(h: Http) -> None:
    two = exchange_raw(h, b"GET /headers HTTP/1.1\r\nHost: http-bodies--misc.localhost\r\n"
                          b"Host: http-long--slow.localhost\r\n\r\n")
    assert two.startswith(b"HTTP/1.1 400 ") and b"more than one Host" in two
    started = time.monotonic()
    old = exchange_raw(h, f"GET {h.path('http-bodies', 'misc', '/headers')}\r\n".encode())  # HTTP/0.9
    assert old.startswith(b"HTTP/1.1 400 ") and b"no HTTP version" in old
    assert time.monotonic() - started < 20  # not held until the 75 s idle timeout


def test_connection_host_keeps_the_host_header(h: Http) -> None:
    host = f"http-bodies--misc.localhost:{h.port}"
    resp = requests.get(f"http://127.0.0.1:{h.port}/headers", timeout=30,
                        headers={"Host": host, "Connection": "host"})
    assert resp.status_code == 200
    assert dict(resp.json()["headers"])["host"] == host


def test_a_bad_log_offset_is_400_with_a_reason(h: Http) -> None:
    status, body = admin(h.wisp, "/v1/apps/http-bodies/logs?offset=abc")
    assert status == 400 and "offset='abc'" in json.loads(body)["error"]
    assert admin(h.wisp, "/v1/apps/http-bodies/logs?offset=-1")[0] == 400
    assert admin(h.wisp, "/v1/apps/http-bodies/logs?offset=0")[0] == 200


def test_an_error_is_logged_with_its_request_id(h: Http) -> None:
    resp = requests.get(h.url("http-bodies", "misc", "/boom"), timeout=30)
    assert resp.status_code == 500
    request_id = resp.headers["x-wisp-request-id"]
    wait_until(lambda: f"(request {request_id})" in h.wisp.run("app", "logs", "http-bodies").stdout,
               timeout=10, message="the request id in the logs")


# -- 4. WebSockets ---------------------------------------------------------------------------------
def test_websocket_frames_subprotocol_ping_and_close_codes(h: Http) -> None:
    with WebSocket(h.port, h.path("http-ws", "chat", "/ws"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.headers["x-wisp-request-id"]
        assert str(ws.recv()).startswith("hello from ")
        ws.send("text")
        assert ws.recv() == "echo:text"
        payload = os.urandom(1024 * 1024)
        ws.send(payload)
        assert ws.recv() == payload[::-1]
        ws.ping(b"ping-payload")
        assert ws.recv_pong() == b"ping-payload"
        ws.send("close-me")
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert (closed.value.code, closed.value.reason) == (4001, "asked to")
    with WebSocket(h.port, h.path("http-ws", "chat", "/ws")) as ws:
        ws.recv()
        ws.close(4002, "bye")
        ws.wait_closed()
    wait_until(lambda: "disconnect 4002" in h.lines("http_ws"), timeout=10, message="the app's close code")


def test_an_open_websocket_is_in_flight_and_outlives_window_and_idle_timeout(h: Http) -> None:
    with WebSocket(h.port, h.path("http-ws", "chat", "/ws"), timeout=30) as ws:
        pid = str(ws.recv()).rpartition(" ")[2]
        wait_until(lambda: h.endpoint("http-ws", "chat")["in_flight"] == 1, timeout=10, message="counted in flight")
        time.sleep(WINDOW + 3)  # past the redirect window and the 2 s container idle timeout
        assert h.endpoint("http-ws", "chat")["in_flight"] == 1
        ws.send("still there")
        assert ws.recv() == "echo:still there"
        assert h.endpoint("http-ws", "chat")["containers"] == {"busy": 1}
    wait_until(lambda: h.endpoint("http-ws", "chat")["in_flight"] == 0, timeout=10, message="released")
    assert pid.isdigit()


def test_websocket_through_a_class_web_method(h: Http) -> None:
    with WebSocket(h.port, h.path("http-ws", "room-web", "/ws")) as ws:
        assert str(ws.recv()).startswith("room entered in ")
        ws.send(b"abc")
        assert ws.recv() == b"cba"


# -- 5. @wisp.web_server -------------------------------------------------------------------------
def test_web_server_proxies_any_server(h: Http) -> None:
    resp = requests.get(h.url("http-web-server", "files", "/hello.txt"), timeout=60)
    assert (resp.status_code, resp.text) == (200, "hello from a file\n")
    assert resp.headers["x-wisp-request-id"]
    assert requests.get(h.url("http-web-server", "files", "/missing.txt"), timeout=30).status_code == 404
    head = requests.head(h.url("http-web-server", "files", "/hello.txt"), timeout=30)
    assert (head.status_code, head.headers["content-length"]) == (200, "18")
    by_host = requests.get(f"http://127.0.0.1:{h.port}/hello.txt", timeout=30,
                           headers={"Host": f"http-web-server--files.localhost:{h.port}"})
    assert by_host.text == "hello from a file\n"
    conn = h.client()  # http.server closes after each answer; the client connection stays
    for _ in range(3):
        conn.request("GET", h.path("http-web-server", "files", "/hello.txt"))
        assert conn.getresponse().read() == b"hello from a file\n"
    conn.close()


def test_web_server_containers_each_get_a_port_and_proxy_websockets(h: Http) -> None:
    wait_until(lambda: h.endpoint("http-web-server", "uvicorn_ws")["containers"] == {"ready": 2}, timeout=120,
               message="two web_server containers side by side")
    answer = requests.get(h.url("http-web-server", "uvicorn-ws", "/"), timeout=30).text
    assert answer.startswith("port ") and answer.split()[1].isdigit()
    logs = h.wisp.run("app", "logs", "http-web-server").stdout
    if h.wisp.runtime() == "sandbox":  # each container has a loopback of its own: both take the declared port
        assert answer.split()[1] == str(h.ports["PORT_WS"]) and "is in use" not in logs, (answer, logs)
    else:  # one network: the second container is told another port, and the log says why
        assert f"port {h.ports['PORT_WS']} is in use" in logs and "PORT=" in logs
    with WebSocket(h.port, h.path("http-web-server", "uvicorn-ws", "/ws")) as ws:
        ws.send("through the proxy")
        assert ws.recv() == "echo:through the proxy"


def test_a_web_server_that_never_listens_fails_naming_its_port(h: Http) -> None:
    resp = requests.get(h.url("http-web-server", "never-listens"), timeout=60)
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert f"port {h.ports['PORT_NEVER']}" in error and "startup_timeout=1 s" in error

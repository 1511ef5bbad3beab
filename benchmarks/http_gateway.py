"""The whole of HTTP through the gateway vs. the same app served by uvicorn directly (issue 5).

    .venv/bin/python -P benchmarks/http_gateway.py [--size-gib 2] [--chunks 200] [--round-trips 2000] [--json PATH]

Starts its own wisp server (temporary WISP_HOME, free port, body limit raised past the
transfer size) and deploys one @stub.asgi app; in the same run, the same app runs under a plain
`python -m uvicorn` on a TCP port. Measures, side by side:

- streaming: a StreamingResponse sends a chunk every 10 ms carrying the container's
  CLOCK_MONOTONIC (machine-wide), the client notes when each arrives: per-chunk delay;
- large bodies: a `--size-gib` upload (Content-Length, read and counted by the app) and
  download (streamed by the app), timed, with the wisp server process's peak RSS (VmHWM, reset
  through /proc/<pid>/clear_refs before each transfer) against its RSS before;
- WebSockets: sequential round trips of a 32-byte text message to an echo endpoint.

--json PATH writes the samples (see _results.py).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from e2e.wsclient import WebSocket  # noqa: E402  (tests/e2e/wsclient.py: wsproto, blocking)

sys.path.append(str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (benchmarks/_results.py)
from _machine import free_port  # noqa: E402

LABEL = "bench-http--bench"
APP = '''
import asyncio
import time

import wisp

stub = wisp.Stub("bench-http")
BLOCK = bytes(range(256)) * 1024  # 256 KiB


def make_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute

    async def ticks(request):
        n, gap = int(request.query_params["n"]), float(request.query_params["gap"])

        async def chunks():
            for i in range(n):
                yield f"tick {i} {time.monotonic():.6f}\\n"
                await asyncio.sleep(gap)
        return StreamingResponse(chunks(), media_type="text/plain")

    async def sink(request):
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return JSONResponse({"size": size})

    async def source(request):
        n = int(request.query_params["n"])

        async def blocks():
            left = n
            while left > 0:
                yield BLOCK[: min(left, len(BLOCK))]
                left -= len(BLOCK)
        return StreamingResponse(blocks(), headers={"content-length": str(n)})

    async def echo(ws):
        await ws.accept()
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            await ws.send_text(message["text"])

    return Starlette(routes=[Route("/ticks", ticks), Route("/sink", sink, methods=["POST"]),
                             Route("/source", source), WebSocketRoute("/ws", echo)])


@stub.asgi(image=wisp.Image.debian_slim().pip_install("wsproto"), timeout=3600)
def bench():
    return make_app()


def __getattr__(name):  # `uvicorn bench_http:direct_app` for the side-by-side run
    if name == "direct_app":
        return make_app()
    raise AttributeError(name)
'''



class Side:
    """Where to send requests: the gateway (Host form, so paths match) or uvicorn directly."""

    def __init__(self, name: str, port: int, host: str) -> None:
        self.name, self.port, self.host = name, port, host

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=600)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def head(self, method: str, path: str, extra: str = "") -> bytes:
        return f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode()


def chunk_delays(side: Side, n: int, gap: float) -> list[float]:
    seen: dict[int, float] = {}
    with side.connect() as sock:
        sock.sendall(side.head("GET", f"/ticks?n={n}&gap={gap}", "Connection: close\r\n"))
        data = b""
        while chunk := sock.recv(65536):
            now = time.monotonic()
            data += chunk
            for m in re.finditer(rb"tick (\d+) (\d+\.\d+)\n", data):
                seen.setdefault(int(m.group(1)), now - float(m.group(2)))
            data = data[data.rfind(b"\n") + 1:]
    assert len(seen) == n, f"{side.name}: {len(seen)} of {n} chunks"
    return [seen[i] for i in range(n)]


def read_response_head(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


def upload(side: Side, size: int) -> float:
    block = os.urandom(1 << 20)
    started = time.perf_counter()
    with side.connect() as sock:
        sock.sendall(side.head("POST", "/sink", f"Content-Length: {size}\r\nConnection: close\r\n"))
        left = size
        view = memoryview(block)
        while left:
            n = min(left, len(block))
            sock.sendall(view[:n])
            left -= n
        status, rest = read_response_head(sock)
        while chunk := sock.recv(65536):
            rest += chunk
    elapsed = time.perf_counter() - started
    answer = rest[rest.find(b"{"): rest.rfind(b"}") + 1]
    if status != 200 or json.loads(answer or b"{}").get("size") != size:
        raise RuntimeError(f"{side.name}: upload answered {status} {rest[:200]!r}")
    return elapsed


def download(side: Side, size: int) -> float:
    buf = bytearray(1 << 20)
    started = time.perf_counter()
    with side.connect() as sock:
        sock.sendall(side.head("GET", f"/source?n={size}", "Connection: close\r\n"))
        status, rest = read_response_head(sock)
        got = len(rest)
        while got < size:
            n = sock.recv_into(buf)
            if not n:
                break
            got += n
    elapsed = time.perf_counter() - started
    if status != 200 or got != size:
        raise RuntimeError(f"{side.name}: download answered {status} with {got} of {size} bytes")
    return elapsed


def ws_round_trips(side: Side, n: int) -> list[float]:
    samples = []
    with WebSocket(side.port, "/ws", host_header=side.host, timeout=60) as ws:
        message = "x" * 32
        for _ in range(50):  # let both sides settle
            ws.send(message)
            ws.recv()
        for _ in range(n):
            started = time.perf_counter()
            ws.send(message)
            ws.recv()
            samples.append(time.perf_counter() - started)
        ws.close()
    return samples


def rss(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) * 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def with_peak(pid: int, action) -> tuple[float, int, int, float]:  # type: ignore[no-untyped-def]
    """(seconds, RSS before, peak RSS during, CPU seconds) of the wisp server while `action()` runs."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the kernel's VmHWM count
    before, cpu = rss(pid, "VmRSS"), cpu_seconds(pid)
    seconds = action()
    return seconds, before, rss(pid, "VmHWM"), cpu_seconds(pid) - cpu


def q(samples: list[float], quantile: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    size = int(args.size_gib * (1 << 30))

    folder = Path(tempfile.mkdtemp(prefix="wisp-bench-http-"))
    (folder / "bench_http.py").write_text(APP)
    home = folder / "home"
    port, direct_port = free_port(), free_port()
    env = {**os.environ, "WISP_HOME": str(home), "WISP_PORT": str(port),
           "WISP_MAX_BODY_SIZE": str(size + (1 << 30))}
    wisp = [sys.executable, "-m", "wisp.cli"]
    subprocess.run([*wisp, "server", "start"], env=env, check=True, capture_output=True)
    direct = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench_http:direct_app", "--port", str(direct_port),
                               "--ws", "wsproto", "--log-level", "warning", "--no-access-log"], cwd=folder)
    try:
        subprocess.run([*wisp, "deploy", str(folder / "bench_http.py")], env=env, check=True, capture_output=True)
        pid = json.loads((home / "server.json").read_text())["pid"]
        gateway = Side("wisp", port, f"{LABEL}.localhost:{port}")
        plain = Side("direct", direct_port, f"127.0.0.1:{direct_port}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/ticks?n=1&gap=0", headers={"Host": gateway.host})  # a container up
        conn.getresponse().read()
        conn.close()

        delays = {s.name: chunk_delays(s, args.chunks, 0.01) for s in (gateway, plain)}
        trips = {s.name: ws_round_trips(s, args.round_trips) for s in (gateway, plain)}
        transfers = {}
        for side in (gateway, plain):
            transfers[side.name, "up"] = with_peak(pid, lambda: upload(side, size))  # noqa: B023 (called at once)
            transfers[side.name, "down"] = with_peak(pid, lambda: download(side, size))  # noqa: B023 (called at once)
    finally:
        direct.terminate()
        direct.wait()
        subprocess.run([*wisp, "server", "stop"], env=env, check=False, capture_output=True)

    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.chunks} chunks 10 ms apart, "
          f"{args.round_trips} WebSocket round trips, {args.size_gib:g} GiB each way")
    print()
    print("| measure | wisp p50 ms | wisp p99 ms | direct p50 ms | direct p99 ms | added by the gateway p50 ms |")
    print("|---|---|---|---|---|---|")
    for title, data in (("streaming: chunk sent -> received", delays), ("WebSocket round trip, 32 B text", trips)):
        w, d = data["wisp"], data["direct"]
        print(f"| {title} | {q(w, .5):.3f} | {q(w, .99):.3f} | {q(d, .5):.3f} | {q(d, .99):.3f} | "
              f"{(statistics.median(w) - statistics.median(d)) * 1000:.3f} |")
    print()
    print("| transfer | through | seconds | MiB/s | wisp server RSS before MiB | wisp server peak RSS MiB "
          "| wisp server CPU s |")
    print("|---|---|---|---|---|---|---|")
    for (name, way), (seconds, before, peak, cpu) in transfers.items():
        what = f"{args.size_gib:g} GiB {'upload' if way == 'up' else 'download'}"
        print(f"| {what} | {name} | {seconds:.2f} | {size / seconds / 2**20:.0f} | {before / 2**20:.1f} | "
              f"{peak / 2**20:.1f} | {cpu:.2f} |")

    measured: dict[str, tuple[str, list[float | None]]] = {}
    for side in ("wisp", "direct"):
        measured[f"stream.{side}"] = ("ms", [d * 1000 for d in delays[side]])
        measured[f"ws.{side}"] = ("ms", [t * 1000 for t in trips[side]])
    for (name, way), (seconds, before, peak, cpu) in transfers.items():
        measured[f"transfer.{name}.{way}.mib_s"] = ("MiB/s", [size / seconds / 2**20])
        measured[f"transfer.{name}.{way}.server_rss_growth_mib"] = ("MiB", [(peak - before) / 2**20])
        measured[f"transfer.{name}.{way}.server_cpu_s"] = ("s", [cpu])
    _results.write(args.json, "http_gateway", measured,
                   {"size_gib": args.size_gib, "chunks": args.chunks, "round_trips": args.round_trips})


if __name__ == "__main__":
    main()

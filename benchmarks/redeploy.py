"""Requests lost to a redeploy and a scale-down under load: `wisp deploy` vs restarting uvicorn.

    .venv/bin/python -P benchmarks/redeploy.py [--clients 8] [--redeploys 3] [--json PATH]

wisp: deploys a webhook that answers its VERSION, then keeps `--clients` threads sending
requests back to back (keep-alive) while `wisp deploy` rolls out a new version every 3 s,
`--redeploys` times; then load drops to one client while the extra containers reach their
idle timeout (2 s) and stop. Every response must be a 200 from some version; anything else
(a status, a refused or dropped connection) counts as failed.
Baseline: the same app under `python -m uvicorn`, restarted (SIGTERM, start again) at the same
moments under the same load: what a redeploy costs without something in front.
--json PATH writes the counts and latencies (see _results.py).
"""
from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import container_pids, free_port

WISP_SCRIPT = """
import wisp

stub = wisp.Stub("redeploybench")
VERSION = {version}


@stub.webhook(container_idle_timeout=2)
async def version():
    return VERSION
"""
UVICORN_SCRIPT = """
from fastapi import FastAPI

app = FastAPI()
VERSION = {version}


@app.get("/")
async def version():
    return VERSION
"""
PERIOD = 3.0  # seconds between redeploys
TAIL = 6.0  # seconds of one client after the last redeploy: the extra containers stop meanwhile



class Load:
    """Client threads sending GET requests back to back; counts and latencies of each outcome."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.path = path
        self.ok = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []
        self.versions: set[int] = set()
        self._lock = threading.Lock()
        self._stop_above = 0  # clients with an index at or above this stop
        self._threads: list[threading.Thread] = []

    def start(self, clients: int) -> None:
        self._stop_above = clients
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]
        for thread in self._threads:
            thread.start()

    def keep(self, clients: int) -> None:
        self._stop_above = clients

    def stop(self) -> None:
        self._stop_above = 0
        for thread in self._threads:
            thread.join()

    def _client(self, index: int) -> None:
        conn: http.client.HTTPConnection | None = None
        while index < self._stop_above:
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read()
                outcome = "ok" if response.status == 200 else f"status {response.status}"
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                body = b""
                if conn is not None:
                    conn.close()
                conn = None
            took = time.perf_counter() - started
            with self._lock:
                if outcome == "ok":
                    self.ok += 1
                    self.latencies.append(took * 1000)
                    self.versions.add(int(body))
                else:
                    self.failed += 1
                    self.errors[outcome] = self.errors.get(outcome, 0) + 1
            if outcome != "ok":
                time.sleep(0.01)  # a refused connection comes back at once: do not spin on it
        if conn is not None:
            conn.close()


def wait_for(port: int, path: str, version: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            if response.status == 200 and int(response.read()) == version:
                return
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"version {version} was never served on port {port}")


def run_load(port: int, path: str, clients: int, redeploys: int, roll_out: Callable[[int], None]) -> Load:
    load = Load(port, path)
    load.start(clients)
    for version in range(1, redeploys + 1):
        time.sleep(PERIOD)
        roll_out(version)
    time.sleep(1.0)
    load.keep(1)  # the rest of the containers go idle and stop while one client goes on
    time.sleep(TAIL)
    load.stop()
    return load


def measure_wisp(clients: int, redeploys: int) -> tuple[Load, list[float], int]:
    """(the load's outcome, each `wisp deploy`'s seconds, containers left at the end)."""
    folder = Path(tempfile.mkdtemp(prefix="wisp-redeploy-"))
    script = folder / "redeploybench.py"
    script.write_text(WISP_SCRIPT.format(version=0))
    home, port = tempfile.mkdtemp(prefix="wisp-home-"), free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port)}
    cli = [sys.executable, "-m", "wisp.cli"]
    subprocess.run([*cli, "server", "start"], env=env, check=True, capture_output=True)
    deploys: list[float] = []

    def roll_out(version: int) -> None:
        script.write_text(WISP_SCRIPT.format(version=version))
        started = time.perf_counter()
        subprocess.run([*cli, "deploy", str(script)], env=env, check=True, capture_output=True)
        deploys.append(time.perf_counter() - started)

    try:
        subprocess.run([*cli, "deploy", str(script)], env=env, check=True, capture_output=True)
        path = "/redeploybench--version/"
        wait_for(port, path, 0)
        load = run_load(port, path, clients, redeploys, roll_out)
        return load, deploys, len(container_pids(f"{home}/apps/redeploybench/"))
    finally:
        subprocess.run([*cli, "server", "stop"], env=env, capture_output=True)


def measure_uvicorn(clients: int, redeploys: int) -> Load:
    folder = Path(tempfile.mkdtemp(prefix="uvicorn-redeploy-"))
    script = folder / "redeploybench.py"
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start(version: int) -> None:
        script.write_text(UVICORN_SCRIPT.format(version=version))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "redeploybench:app", "--port", str(port), "--log-level", "warning"],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def roll_out(version: int) -> None:
        old = procs[-1]
        old.terminate()  # uvicorn drains what it holds, then exits; the new one can bind after
        old.wait()
        start(version)

    start(0)
    try:
        wait_for(port, "/", 0)
        return run_load(port, "/", clients, redeploys, roll_out)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


def summary(load: Load) -> str:
    lat = sorted(load.latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(load.errors.items())) or "none"
    return (f"{load.ok} | {load.failed} | {statistics.median(lat):.2f} | {p99:.2f} | "
            f"{sorted(load.versions)} | {errors}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--redeploys", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="write the figures here (benchmarks/_results.py)")
    args = parser.parse_args()
    wisp, deploys, left = measure_wisp(args.clients, args.redeploys)
    uvicorn = measure_uvicorn(args.clients, args.redeploys)
    print(f"{args.redeploys} redeploys {PERIOD:.0f} s apart under {args.clients} clients, then 1 client for "
          f"{TAIL:.0f} s while idle containers stop; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print("| | 200 responses | failed | p50 ms | p99 ms | versions seen | failures |")
    print("|---|---|---|---|---|---|---|")
    print(f"| wisp deploy | {summary(wisp)} |")
    print(f"| uvicorn restart | {summary(uvicorn)} |")
    print(f"`wisp deploy` took {statistics.median(deploys):.2f} s median ({', '.join(f'{d:.2f}' for d in deploys)}); "
          f"containers left after the one-client tail: {left}")
    _results.write(args.json, "redeploy", {
        "failed.wisp": ("requests", [wisp.failed]),
        "failed.uvicorn": ("requests", [uvicorn.failed]),
        "latency.wisp": ("ms", wisp.latencies),
        "latency.uvicorn": ("ms", uvicorn.latencies),
        "deploy.wisp": ("s", deploys),
    }, {"clients": args.clients, "redeploys": args.redeploys, "ok.wisp": wisp.ok, "ok.uvicorn": uvicorn.ok,
        "containers_left.wisp": left})


if __name__ == "__main__":
    main()

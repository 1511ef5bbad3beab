"""Cold-start and warm latency of the square webhook: through wisp vs. uvicorn run directly.

    .venv/bin/python -P benchmarks/cold_warm.py [--cold-runs 10] [--warm-requests 500] [--also-fresh] [--json PATH]

Starts its own wisp server (temporary WISP_HOME, free port), deploys examples/webhook_get.py,
and in the same run measures the same FastAPI endpoint served by a fresh `python -m uvicorn`.
Cold = request sent with no container running -> full response received.
Warm = one keep-alive connection, sequential requests.
--also-fresh adds the cold start of wisp with WISP_RUNTIME=local (a fresh interpreter per
container instead of a fork of the image's zygote). --json PATH writes the samples (see _results.py).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "webhook_get.py"
LABEL = "webhook-get--square"
DIRECT_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def square(x: int):
    return {"square": x**2}
"""



def get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> float:
    """Seconds from sending the request to having the whole body."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - start
    if resp.status != 200 or json.loads(body) != {"square": 1764}:
        raise RuntimeError(f"unexpected answer {resp.status} {body!r}")
    if own:
        conn.close()
    return elapsed


def warm(port: int, path: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(20):  # let both sides settle
        get(port, path, conn)
    samples = [get(port, path, conn) for _ in range(n)]
    conn.close()
    return samples


def wisp_cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "wisp.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"`wisp {' '.join(args)}` exited {done.returncode}:\n{done.stdout}{done.stderr}")


def measure_wisp(cold_runs: int, warm_requests: int, runtime: str | None = None) -> tuple[list[float], list[float]]:
    """Cold samples, then warm ones (none when warm_requests is 0). runtime: WISP_RUNTIME, default the server's."""
    home = tempfile.mkdtemp(prefix="wisp-bench-")
    port = free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port)}
    if runtime is not None:
        env["WISP_RUNTIME"] = runtime
    wisp_cli(env, "server", "start")
    path = f"/{LABEL}/?x=42"
    try:
        cold = []
        for _ in range(cold_runs):
            if cold:
                wisp_cli(env, "app", "stop", "webhook_get")
            wisp_cli(env, "deploy", str(SCRIPT))  # a fresh version with no container
            cold.append(get(port, path))
        return cold, warm(port, path, warm_requests) if warm_requests else []
    finally:
        wisp_cli(env, "server", "stop")


def wait_listening(port: int, deadline: float) -> None:
    while time.perf_counter() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            return
        except OSError:
            time.sleep(0.002)
    raise RuntimeError("uvicorn did not start")


def measure_direct(cold_runs: int, warm_requests: int) -> tuple[list[float], list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="wisp-bench-direct-"))
    (folder / "direct_app.py").write_text(DIRECT_APP)
    cold: list[float] = []
    warm_samples: list[float] = []
    for i in range(cold_runs):
        port = free_port()
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "direct_app:app", "--port", str(port),
                                 "--log-level", "warning", "--no-access-log"], cwd=folder)
        try:
            wait_listening(port, start + 60)
            get(port, "/?x=42")
            cold.append(time.perf_counter() - start)
            if i == cold_runs - 1:
                warm_samples = warm(port, "/?x=42", warm_requests)
        finally:
            proc.terminate()
            proc.wait()
    return cold, warm_samples


def ms(samples: list[float], q: float) -> str:
    ordered = sorted(samples)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--warm-requests", type=int, default=500)
    parser.add_argument("--also-fresh", action="store_true",
                        help="also cold starts with WISP_RUNTIME=local (fresh interpreter, no zygote)")
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    wisp_cold, wisp_warm = measure_wisp(args.cold_runs, args.warm_requests)
    fresh_cold = measure_wisp(args.cold_runs, 0, runtime="local")[0] if args.also_fresh else []
    direct_cold, direct_warm = measure_direct(args.cold_runs, args.warm_requests)
    load = os.getloadavg()[0]
    print(f"square webhook, {os.cpu_count()} cores, load {load:.2f}, {args.cold_runs} cold runs, "
          f"{args.warm_requests} warm requests")
    print("| measure | wisp p50 ms | wisp p99 ms | direct uvicorn p50 ms | direct uvicorn p99 ms |")
    print("|---|---|---|---|---|")
    print(f"| cold start (no container -> response) | {ms(wisp_cold, .5)} | {ms(wisp_cold, .99)} | "
          f"{ms(direct_cold, .5)} | {ms(direct_cold, .99)} |")
    if fresh_cold:
        print(f"| cold start, wisp fresh process (WISP_RUNTIME=local) | {ms(fresh_cold, .5)} | "
              f"{ms(fresh_cold, .99)} | | |")
    print(f"| warm request (keep-alive) | {ms(wisp_warm, .5)} | {ms(wisp_warm, .99)} | "
          f"{ms(direct_warm, .5)} | {ms(direct_warm, .99)} |")
    print(f"| warm added by wisp p50 | {(statistics.median(wisp_warm) - statistics.median(direct_warm)) * 1000:.3f} | | | |")

    def in_ms(samples: list[float]) -> tuple[str, list[float | None]]:
        return "ms", [s * 1000 for s in samples]

    measured = {"cold.wisp": in_ms(wisp_cold), "cold.direct": in_ms(direct_cold),
                "warm.wisp": in_ms(wisp_warm), "warm.direct": in_ms(direct_warm)}
    if fresh_cold:
        measured["cold.fresh"] = in_ms(fresh_cold)
    _results.write(args.json, "cold_warm", measured, {"cold_runs": args.cold_runs, "warm_requests": args.warm_requests})


if __name__ == "__main__":
    main()

"""Calls between functions: `.remote()` from a web endpoint vs an in-process call vs an HTTP
request to a second endpoint (all timed inside the same container, same run), and `.map()`
throughput over small inputs vs the same inputs as sequential `.remote()` calls.

    .venv/bin/python -P benchmarks/calls.py [--calls 1000] [--map 10000] [--json PATH]

Default settings throughout (no @concurrent: one input per container, as Modal). The server is
a fresh one on its own WISP_HOME.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = '''
import http.client
import os
import time

import wisp

app = wisp.App("callbench")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
@wisp.fastapi_endpoint()
def square_web(x: int) -> int:
    return x * x


@app.function()
@wisp.fastapi_endpoint()
def bench(mode: str, n: int) -> list:
    """n calls of one kind, each timed here, in the container (microseconds)."""
    port = int(os.environ["WISP_CALL_URL"].rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port)
    samples = []
    for i in range(n + 20):  # the first 20 warm up (a cold start of the callee, connections)
        t = time.perf_counter()
        if mode == "remote":
            square.remote(i)
        elif mode == "local":
            square.local(i)
        else:
            conn.request("GET", f"/callbench--square-web/?x={i}")
            conn.getresponse().read()
        if i >= 20:
            samples.append((time.perf_counter() - t) * 1e6)
    return samples
'''
DRIVER = '''
import json, sys, time
sys.path.insert(0, sys.argv[1])
from callbench import app, square
n = int(sys.argv[2])
with app.run():
    list(square.map(range(64)))  # warm: containers up
    t = time.perf_counter(); out = list(square.map(range(n))); mapped = time.perf_counter() - t
    assert out == [i * i for i in range(n)]
    m = n // 10
    t = time.perf_counter()
    for i in range(m):
        square.remote(i)
    looped = time.perf_counter() - t
print(json.dumps({"map_per_s": n / mapped, "loop_per_s": m / looped}))
'''


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--map", type=int, default=10000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wisp-callbench-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "src" / "callbench.py").write_text(SCRIPT)
        port = free_port()
        env = {**os.environ, "WISP_HOME": str(root / "home"), "WISP_PORT": str(port)}
        wisp = [sys.executable, "-m", "wisp.cli"]
        subprocess.run([*wisp, "deploy", str(root / "src" / "callbench.py")], env=env, check=True,
                       capture_output=True)
        try:
            rows = {}
            for mode in ("remote", "local", "http"):
                url = f"http://127.0.0.1:{port}/callbench--bench/?mode={mode}&n={args.calls}"
                with urllib.request.urlopen(url, timeout=600) as resp:
                    rows[mode] = json.loads(resp.read())
            proc = subprocess.run([sys.executable, "-c", DRIVER, str(root / "src"), str(args.map)], env=env,
                                  capture_output=True, text=True, timeout=900, check=True)
            rates = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run([*wisp, "server", "stop"], env=env, capture_output=True)
    print(f"calls from a web endpoint, {args.calls} each, timed in the container (µs)")
    print(f"{'form':<34}{'p50':>10}{'p99':>10}")
    names = {"remote": "square.remote(x)", "local": "square.local(x) (in process)",
             "http": "HTTP GET to a second endpoint"}
    for mode, samples in rows.items():
        print(f"{names[mode]:<34}{statistics.median(samples):>10.1f}{pct(samples, 0.99):>10.1f}")
    print(f"\n.map() over {args.map} inputs: {rates['map_per_s']:.0f} inputs/s; "
          f"sequential .remote() over {args.map // 10}: {rates['loop_per_s']:.0f} calls/s")
    _results.write(str(args.json) if args.json else None, "calls", {
        "remote": ("us", rows["remote"]), "local": ("us", rows["local"]), "http": ("us", rows["http"]),
        "map": ("inputs/s", [rates["map_per_s"]]), "loop": ("calls/s", [rates["loop_per_s"]]),
    })


if __name__ == "__main__":
    main()

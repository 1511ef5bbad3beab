"""Idle container memory: a zygote-forked container vs a fresh-interpreter one vs plain uvicorn.

    .venv/bin/python -P benchmarks/memory.py [--containers 4] [--json PATH]

Deploys the square webhook with keep_warm=N on a server with the default runtime (auto: the
sandbox where the kernel allows it; WISP_RUNTIME chooses another) and again
with WISP_RUNTIME=local, waits until the N containers are ready, sends 10*N requests N at a
time (each container serves about 10), lets them idle 2 s, and reads each container's /proc/PID/smaps_rollup: PSS (its fair share of shared pages) and private memory
(Private_Clean + Private_Dirty). The baseline is `python -m uvicorn` serving the same endpoint.
--json PATH writes each process's figures (see _results.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import app_pids, container_pids, free_port, rollup

SCRIPT = """
import time

import wisp

stub = wisp.Stub("memory")


@stub.webhook(keep_warm={n})
def square(x: int = 2, hold: float = 0.0):
    time.sleep(hold)  # lets concurrent requests spread over every container
    return {{"square": x**2}}
"""
DIRECT_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def square(x: int = 2):
    return {"square": x**2}
"""




def zygote_pids(folder: str) -> list[int]:
    """The function's zygote (in the app's folder, parent of the containers) and its image's."""
    pids = app_pids(folder)
    function_zygotes = {parent for parent in pids.values() if parent in pids}
    return sorted(function_zygotes | {pids[pid] for pid in function_zygotes})


def measure_wisp(runtime: str, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(each container's (PSS, private) after it served requests, the zygotes' (PSS, private))."""
    home = tempfile.mkdtemp(prefix="wisp-mem-")
    src = Path(tempfile.mkdtemp(prefix="wisp-mem-src-"))
    (src / "memory_app.py").write_text(SCRIPT.format(n=n))
    port = free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port), "WISP_RUNTIME": runtime}
    cli = [sys.executable, "-m", "wisp.cli"]
    subprocess.run([*cli, "server", "start"], env=env, check=True, capture_output=True)
    try:
        subprocess.run([*cli, "deploy", str(src / "memory_app.py")], env=env, check=True, capture_output=True)
        folder = f"{home}/apps/memory/"
        deadline = time.monotonic() + 120
        while len(container_pids(folder)) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/memory--square/?x=3&hold=0.05"
        with ThreadPoolExecutor(n) as pool:  # n at a time: about 10 requests per container
            list(pool.map(lambda _: urllib.request.urlopen(url, timeout=30).read(), range(10 * n)))
        time.sleep(2)  # idle
        return [rollup(pid) for pid in container_pids(folder)], [rollup(pid) for pid in zygote_pids(folder)]
    finally:
        subprocess.run([*cli, "server", "stop"], env=env, capture_output=True)


def measure_direct() -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(prefix="wisp-mem-direct-"))
    (folder / "direct_app.py").write_text(DIRECT_APP)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "direct_app:app", "--port", str(port),
                             "--log-level", "warning"], cwd=folder)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/?x=3", timeout=5).read()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(2)
        return rollup(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=4)
    parser.add_argument("--json", metavar="PATH", help="write the figures here (benchmarks/_results.py)")
    args = parser.parse_args()
    forked, zygotes = measure_wisp(os.environ.get("WISP_RUNTIME", "auto"), args.containers)
    fresh, _ = measure_wisp("local", args.containers)
    direct = measure_direct()
    print(f"idle FastAPI webhook container memory, {args.containers} warm containers, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| container | PSS MB (median) | private MB (median) | target |")
    print("|---|---|---|---|")
    for name, rows in (("wisp, forked from a zygote", forked), ("wisp, fresh interpreter", fresh)):
        pss = statistics.median(r[0] for r in rows)
        private = statistics.median(r[1] for r in rows)
        print(f"| {name} ({len(rows)}) | {pss:.1f} | {private:.1f} | PSS <= 25, private <= 10 |")
    print(f"| uvicorn run directly | {direct[0]:.1f} | {direct[1]:.1f} | |")
    print(f"| the zygotes behind the forked ones (image + function), total | {sum(z[0] for z in zygotes):.1f} "
          f"| {sum(z[1] for z in zygotes):.1f} | |")
    print(json.dumps({"forked": forked, "fresh": fresh, "direct": direct}))
    measured = {}
    for name, rows in (("zygote", forked), ("fresh", fresh), ("uvicorn", [direct])):
        measured[f"pss.{name}"] = ("MB", [r[0] for r in rows])
        measured[f"private.{name}"] = ("MB", [r[1] for r in rows])
    _results.write(args.json, "memory", measured, {
        "containers": args.containers,
        "zygotes_pss_mb_total": round(sum(z[0] for z in zygotes), 1),
        "zygotes_private_mb_total": round(sum(z[1] for z in zygotes), 1),
    })


if __name__ == "__main__":
    main()

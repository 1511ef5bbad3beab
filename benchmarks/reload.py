"""How long an edit takes to serve: `wisp serve` vs. `uvicorn --reload`, same app, same run.

    .venv/bin/python -P benchmarks/reload.py [--edits 5] [--json PATH]

Each edit rewrites the script with a new VERSION; the time is from the write to the first
response carrying that version (polling every 10 ms). --json PATH writes the samples
(see _results.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port

WISP_SCRIPT = """
import wisp

stub = wisp.Stub("reloadbench")
VERSION = {version}


@stub.webhook
def version():
    return VERSION
"""
UVICORN_SCRIPT = """
from fastapi import FastAPI

app = FastAPI()
VERSION = {version}


@app.get("/")
def version():
    return VERSION
"""



def fetch(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return int(resp.read())
    except (OSError, ValueError):
        return None


def time_edits(script: Path, template: str, url: str, edits: int) -> list[float]:
    deadline = time.monotonic() + 120
    while fetch(url) != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never served version 0")
        time.sleep(0.05)
    samples = []
    for version in range(1, edits + 1):
        time.sleep(1.0)  # let the watcher settle between edits
        start = time.perf_counter()
        script.write_text(template.format(version=version))
        while fetch(url) != version:
            if time.perf_counter() - start > 60:
                raise RuntimeError(f"version {version} never served")
            time.sleep(0.01)
        samples.append(time.perf_counter() - start)
    return samples


def measure_wisp(edits: int) -> list[float]:
    folder = Path(tempfile.mkdtemp(prefix="wisp-reload-"))
    script = folder / "reloadbench.py"
    script.write_text(WISP_SCRIPT.format(version=0))
    home, port = tempfile.mkdtemp(prefix="wisp-home-"), free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port)}
    serve = subprocess.Popen([sys.executable, "-m", "wisp.cli", "serve", str(script)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return time_edits(script, WISP_SCRIPT, f"http://127.0.0.1:{port}/reloadbench--version-dev/", edits)
    finally:
        serve.terminate()
        serve.wait()
        subprocess.run([sys.executable, "-m", "wisp.cli", "server", "stop"], env=env, capture_output=True)


def measure_uvicorn(edits: int) -> list[float]:
    folder = Path(tempfile.mkdtemp(prefix="uvicorn-reload-"))
    script = folder / "reloadbench.py"
    script.write_text(UVICORN_SCRIPT.format(version=0))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "reloadbench:app", "--reload", "--port", str(port),
                             "--log-level", "warning"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return time_edits(script, UVICORN_SCRIPT, f"http://127.0.0.1:{port}/", edits)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    wisp = measure_wisp(args.edits)
    uvicorn = measure_uvicorn(args.edits)
    print(f"edit -> new code served, {args.edits} edits, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print("| | median s | max s |")
    print("|---|---|---|")
    print(f"| wisp serve | {statistics.median(wisp):.2f} | {max(wisp):.2f} |")
    print(f"| uvicorn --reload | {statistics.median(uvicorn):.2f} | {max(uvicorn):.2f} |")
    _results.write(args.json, "reload", {"reload.wisp": ("s", wisp), "reload.uvicorn": ("s", uvicorn)},
                   {"edits": args.edits})


if __name__ == "__main__":
    main()

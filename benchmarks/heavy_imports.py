"""Heavy imports stay cheap (issue 16, point 4): a script that imports numpy and pandas at the top,
cold-started from its zygote, beside the same script in a fresh interpreter, in one run.

    .venv/bin/python -P benchmarks/heavy_imports.py [--cold-runs 10] [--home DIR] [--json PATH]

The app's image is `Image.debian_slim().pip_install("numpy", "pandas")`, built once by the local
builder into the WISP_HOME (--home keeps it between runs; a new one otherwise). Each cold start is a
request sent once the function's container has scaled down (scaledown_window=2) -> full response,
the function building a pandas DataFrame and multiplying two numpy matrices:

- forked: the default runtime (auto: the sandbox where the kernel allows it), or WISP_RUNTIME;
  the function zygote imported numpy and pandas once, each cold
  start forks it (OpenBLAS's pool stops its threads for the fork and starts them in the child);
- fresh interpreter: the same server with WISP_RUNTIME=local, a new Python per container that
  imports numpy, pandas and the script each time;
- bare import: `python -c "import numpy, pandas"` in the image's interpreter, what a fresh
  container pays at least before it serves anything.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import app_pids
from idle_cost import Server, cold, ms

APP = "heavy"
SCRIPT = '''import os

import wisp

try:
    import numpy as np
    import pandas as pd
except ImportError:  # not on the machine that deploys; in the image they are
    np = pd = None

stub = wisp.Stub("heavy", image=wisp.Image.debian_slim().pip_install("numpy", "pandas"))


@stub.webhook(scaledown_window=2)
def f0(n: int = 64):
    frame = pd.DataFrame({"x": np.arange(n)})
    ones = np.ones((n, n))
    return {"sum": int(frame["x"].sum()), "matmul": float((ones @ ones).sum()), "pid": os.getpid()}
'''


def cold_starts(home: str, runtime: str, runs: int) -> list[float]:
    with Server({"WISP_RUNTIME": runtime}, home=home) as server:
        server.deploy(APP, SCRIPT)
        server.get(f"/{APP}--f0/")  # the first request: checks the answer works before timing
        folder = server.folder(APP)
        # A fresh interpreter's container has no zygote above it: cold once no process works in the folder.
        return cold(server, APP, runs, (lambda: not app_pids(folder)) if runtime == "local" else (lambda: True))


def bare_imports(home: str, runs: int) -> list[float]:
    """Seconds for the image's interpreter to start and import numpy and pandas."""
    python = next(Path(home, "images").glob("*/lib/python3*/site-packages/pandas")).parents[3] / "bin" / "python"
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(python), "-c", "import numpy, pandas"], check=True)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--home", help="a WISP_HOME to build the image in and keep (default: a new one)")
    parser.add_argument("--json", metavar="PATH", help="write the figures here (benchmarks/_results.py)")
    args = parser.parse_args()
    home = args.home or tempfile.mkdtemp(prefix="wisp-heavy-")
    built = time.perf_counter()
    zygote = cold_starts(home, os.environ.get("WISP_RUNTIME", "auto"), args.cold_runs)
    took = time.perf_counter() - built
    fresh = cold_starts(home, "local", args.cold_runs)
    bare = bare_imports(home, args.cold_runs)
    print(f"numpy + pandas imported at the top, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
          f"{args.cold_runs} cold starts each (first server, image build included: {took:.0f} s)")
    print("| cold start -> response | p50 ms | p99 ms | target |")
    print("|---|---|---|---|")
    rows = (("wisp, forked from the function zygote", zygote, "p50 <= 30 ms"),
            ("wisp, fresh interpreter (WISP_RUNTIME=local)", fresh, ""),
            ("`python -c 'import numpy, pandas'` in the image", bare, ""))
    for label, samples, target in rows:
        print(f"| {label} | {ms(samples, .5):.1f} | {ms(samples, .99):.1f} | {target} |")
    _results.write(args.json, "heavy_imports", {
        "cold.zygote": ("ms", [s * 1000 for s in zygote]), "cold.fresh": ("ms", [s * 1000 for s in fresh]),
        "import.bare": ("ms", [s * 1000 for s in bare])}, {"runs": args.cold_runs,
                                                            "zygote_p50_ms": round(statistics.median(zygote) * 1000, 1)})


if __name__ == "__main__":
    main()

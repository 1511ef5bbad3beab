"""Cold starts of three apps on one server, in turn, to tell what numpy and pandas add to a cold
start from a function's zygote (issue 16, point 4) from what every cold start pays.

    .venv/bin/python -P benchmarks/profiling/cold_apps.py [--runs 5] [--home DIR]

- plain: a webhook returning a dict, on debian_slim;
- heavyidle: the same webhook in a script that imports numpy and pandas at the top (their image);
- heavy: benchmarks/heavy_imports.py's script, whose webhook builds a DataFrame and multiplies
  two numpy matrices.

Each round cold-starts each app once (its container scaled down, scaledown_window=2), so the
three see the same moments of the machine. The default runtime, or WISP_RUNTIME. --home keeps
the image between runs. The probe behind docs/profiling.md's "A cold start from a function's
zygote, step by step".
"""
import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
import heavy_imports
from idle_cost import Server, cold

PLAIN = '''import os

import wisp

stub = wisp.Stub("plain")


@stub.webhook(scaledown_window=2)
def f0(n: int = 64):
    return {"n": n, "pid": os.getpid()}
'''
HEAVY_WORK = '''    frame = pd.DataFrame({"x": np.arange(n)})
    ones = np.ones((n, n))
    return {"sum": int(frame["x"].sum()), "matmul": float((ones @ ones).sum()), "pid": os.getpid()}
'''
assert HEAVY_WORK in heavy_imports.SCRIPT
APPS = {
    "plain": PLAIN,
    "heavyidle": heavy_imports.SCRIPT.replace('"heavy"', '"heavyidle"').replace(
        HEAVY_WORK, '    return {"n": n, "pid": os.getpid()}\n'),
    "heavy": heavy_imports.SCRIPT,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="rounds: one cold start of each app per round")
    parser.add_argument("--home", help="a WISP_HOME to build the images in and keep (default: a new one)")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {app: [] for app in APPS}
    with Server({}, home=args.home or tempfile.mkdtemp(prefix="wisp-cold-apps-")) as server:
        for app, text in APPS.items():
            server.deploy(app, text)
            server.get(f"/{app}--f0/")  # the first request: checks the answer works before timing
        for _ in range(args.runs):
            for app in APPS:
                samples[app] += cold(server, app, 1, lambda: True)
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {args.runs} cold starts of each, in turn")
    print("| app | p50 ms | min ms | each, ms |")
    print("|---|---|---|---|")
    for app, times in samples.items():
        ms = sorted(t * 1000 for t in times)
        print(f"| {app} | {statistics.median(ms):.1f} | {ms[0]:.1f} | {' '.join(f'{t:.1f}' for t in ms)} |")


if __name__ == "__main__":
    main()

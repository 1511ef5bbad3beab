"""Run every benchmark in this folder, one after the other, and print their tables.

    .venv/bin/python -P benchmarks/run_all.py [--skip throughput]

Each script starts and stops its own wisp server and baselines; `throughput` needs wrk (and
nginx for its nginx row): `apt-get install wrk nginx-light`. About 8 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("cold_warm", "reload", "autoscale", "memory", "images", "http_gateway", "throughput")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip", action="append", default=[], choices=SCRIPTS)
    args = parser.parse_args()
    print(f"wisp benchmarks, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}")
    failed = []
    for name in SCRIPTS:
        if name in args.skip:
            continue
        print(f"\n## {name}\n", flush=True)
        started = time.monotonic()
        # -P: a script here named like a stdlib module must not shadow it for the others
        code = subprocess.run([sys.executable, "-P", str(HERE / f"{name}.py")]).returncode
        print(f"\n({name}: exit {code}, {time.monotonic() - started:.0f} s)", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nFailed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()

"""What enforced limits cost a cold start: the square webhook on a server with cgroup slots
(the default) vs. one with WISP_LIMITS=0, in the same run, rounds interleaved.

    .venv/bin/python -P benchmarks/limits.py [--cold-runs 15] [--json PATH]

Each round deploys a fresh version on each server (no container running) and times one request
to it: the fork of a container, its join of a slot made ahead (limits), its start and answer.
Needs a server that can create cgroups (root); without them both sides are the same and the
script says so.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port
from cold_warm import LABEL, SCRIPT, get, ms, wisp_cli


class Server:
    def __init__(self, extra: dict[str, str]) -> None:
        self.home = tempfile.mkdtemp(prefix="wisp-bench-limits-")
        self.port = free_port()
        self.env = {**os.environ, "WISP_HOME": self.home, "WISP_PORT": str(self.port), **extra}
        wisp_cli(self.env, "server", "start")
        self.runs = 0

    def log(self) -> str:
        return (Path(self.home) / "server.log").read_text()

    def cold(self) -> float:
        if self.runs:
            wisp_cli(self.env, "app", "stop", "webhook_get")
        self.runs += 1
        wisp_cli(self.env, "deploy", str(SCRIPT))
        return get(self.port, f"/{LABEL}/?x=42")

    def stop(self) -> None:
        wisp_cli(self.env, "server", "stop")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    limited, unlimited = Server({}), Server({"WISP_LIMITS": "0"})
    try:
        enforced = "limits: cgroup" in limited.log()
        with_limits, without = [], []
        for _ in range(args.cold_runs):
            with_limits.append(limited.cold())
            without.append(unlimited.cold())
    finally:
        limited.stop()
        unlimited.stop()
    load = os.getloadavg()[0]
    print(f"square webhook, cold start, {os.cpu_count()} cores, load {load:.2f}, {args.cold_runs} rounds interleaved"
          + ("" if enforced else " (NO cgroups here: both sides run without limits)"))
    print("| measure | with limits p50 ms | with limits p99 ms | WISP_LIMITS=0 p50 ms | WISP_LIMITS=0 p99 ms |")
    print("|---|---|---|---|---|")
    print(f"| cold start (no container -> response) | {ms(with_limits, .5)} | {ms(with_limits, .99)} | "
          f"{ms(without, .5)} | {ms(without, .99)} |")
    _results.write(args.json, "limits", {"cold.limits": ("ms", [s * 1000 for s in with_limits]),
                                         "cold.unlimited": ("ms", [s * 1000 for s in without])},
                   {"cold_runs": args.cold_runs, "enforced": enforced})


if __name__ == "__main__":
    main()

"""Cold start with the sandbox vs without it, in the same run (issue 15, point 1; target: p50 <= 25 ms).

    .venv/bin/python -P benchmarks/sandbox.py [--cold-runs 20] [--json PATH]

Two servers one after the other (temporary WISP_HOMEs, free ports), one with WISP_RUNTIME=zygote
and one with WISP_RUNTIME=sandbox, each deploying examples/webhook_get.py afresh before every
sample (cold_warm.py's `measure_wisp`): cold = request sent with no container running -> full
response, which for the sandbox includes the container's user, mount, pid, net, ipc and uts
namespaces, its /tmp and write layer, the second fork that makes it pid 1, and its seccomp
filter. Warm requests (keep-alive) show the sandbox costs nothing per request. Run as root (the
sandbox's per-app uids); the server prints what the kernel refuses, if anything.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from cold_warm import measure_wisp, ms

TARGET_MS = 25.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-runs", type=int, default=20)
    parser.add_argument("--warm-requests", type=int, default=300)
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    plain_cold, plain_warm = measure_wisp(args.cold_runs, args.warm_requests, runtime="zygote")
    boxed_cold, boxed_warm = measure_wisp(args.cold_runs, args.warm_requests, runtime="sandbox")
    load = os.getloadavg()[0]
    print(f"square webhook, {os.cpu_count()} cores, load {load_before:.2f} before / {load:.2f} after, "
          f"{args.cold_runs} cold runs, {args.warm_requests} warm requests")
    print("| measure | sandbox p50 ms | sandbox p99 ms | zygote (no sandbox) p50 ms | zygote p99 ms |")
    print("|---|---|---|---|---|")
    print(f"| cold start (no container -> response) | {ms(boxed_cold, .5)} | {ms(boxed_cold, .99)} | "
          f"{ms(plain_cold, .5)} | {ms(plain_cold, .99)} |")
    print(f"| warm request (keep-alive) | {ms(boxed_warm, .5)} | {ms(boxed_warm, .99)} | "
          f"{ms(plain_warm, .5)} | {ms(plain_warm, .99)} |")
    verdict = "meets" if float(ms(boxed_cold, .5)) <= TARGET_MS else "misses"
    print(f"sandboxed cold p50 {verdict} the {TARGET_MS:.0f} ms target")

    def in_ms(samples: list[float]) -> tuple[str, list[float | None]]:
        return "ms", [s * 1000 for s in samples]

    _results.write(args.json, "sandbox", {"cold.sandbox": in_ms(boxed_cold), "cold.zygote": in_ms(plain_cold),
                                          "warm.sandbox": in_ms(boxed_warm), "warm.zygote": in_ms(plain_warm)},
                   {"cold_runs": args.cold_runs, "warm_requests": args.warm_requests})


if __name__ == "__main__":
    main()

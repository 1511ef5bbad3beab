"""Cold start with the sandbox vs without it, in the same run (issue 15, point 1; target: p50 <= 25 ms).

    .venv/bin/python -P benchmarks/sandbox.py [--cold-runs 20] [--json PATH]

Two servers at once (temporary WISP_HOMEs, free ports), one with WISP_RUNTIME=zygote and one
with WISP_RUNTIME=sandbox, taking turns (so a busy machine weighs on both alike), each deploying
examples/webhook_get.py afresh before every sample: cold = request sent with no container
running -> full response, which for the sandbox includes the container's user, mount, pid, net, ipc and uts
namespaces, its /tmp and write layer, the second fork that makes it pid 1, and its seccomp
filter. Warm requests (keep-alive) show the sandbox costs nothing per request. Run as root (the
sandbox's per-app uids: the homes are 0711); the server prints what the kernel refuses, if anything.
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
from cold_warm import LABEL, SCRIPT, get, ms, warm, wisp_cli

TARGET_MS = 25.0
RUNTIMES = ("sandbox", "zygote")


def start(runtime: str) -> tuple[dict[str, str], int]:
    home = tempfile.mkdtemp(prefix="wisp-bench-sandbox-")
    os.chmod(home, 0o711)  # enterable, so a root server gives the app a uid of its own, as in production
    port = free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port), "WISP_RUNTIME": runtime}
    wisp_cli(env, "server", "start")
    return env, port


def measure(cold_runs: int, warm_requests: int) -> dict[str, tuple[list[float], list[float]]]:
    servers = {runtime: start(runtime) for runtime in RUNTIMES}
    path = f"/{LABEL}/?x=42"
    cold: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
    try:
        for i in range(cold_runs):
            for runtime, (env, port) in servers.items():
                if i:
                    wisp_cli(env, "app", "stop", "webhook_get")
                wisp_cli(env, "deploy", str(SCRIPT))  # a fresh version with no container
                cold[runtime].append(get(port, path))
        return {runtime: (cold[runtime], warm(port, path, warm_requests)) for runtime, (_, port) in servers.items()}
    finally:
        for env, _ in servers.values():
            wisp_cli(env, "server", "stop")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-runs", type=int, default=20)
    parser.add_argument("--warm-requests", type=int, default=300)
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    measured = measure(args.cold_runs, args.warm_requests)
    boxed_cold, boxed_warm = measured["sandbox"]
    plain_cold, plain_warm = measured["zygote"]
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

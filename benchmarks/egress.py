"""Cold start of a sandboxed container with `network=True` vs without it, in the same run (issue 15,
point 1: the veth, its addresses and its nftables entry are made per container).

    .venv/bin/python -P benchmarks/egress.py [--cold-runs 15] [--json PATH]

One server with WISP_RUNTIME=sandbox (a temporary WISP_HOME, a free port, run as root) and one
app of two webhooks that differ only in `network=True`, taking turns: before each sample the app
is deployed afresh, so cold = request sent with no container running -> full response. For the
networked one that includes making its veth pair, its addresses and routes, its entry in the
server's nftables policy, and the container's wait for its default route.
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
from cold_warm import get, ms, wisp_cli

APP = '''
import wisp

app = wisp.App("egress-bench")


@app.function()
@wisp.fastapi_endpoint()
def plain(x: int) -> dict[str, int]:
    return {"square": x * x}


@app.function(network=True)
@wisp.fastapi_endpoint()
def networked(x: int) -> dict[str, int]:
    return {"square": x * x}
'''
FUNCTIONS = ("plain", "networked")


def measure(cold_runs: int) -> dict[str, list[float]]:
    home = tempfile.mkdtemp(prefix="wisp-bench-egress-")
    os.chmod(home, 0o711)  # enterable, so a root server gives the app a uid of its own, as in production
    script = Path(tempfile.mkdtemp(prefix="wisp-bench-egress-app-")) / "egress_bench.py"
    script.write_text(APP)
    port = free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port), "WISP_RUNTIME": "sandbox"}
    wisp_cli(env, "server", "start")
    cold: dict[str, list[float]] = {name: [] for name in FUNCTIONS}
    try:
        for i in range(cold_runs):
            for j, name in enumerate(FUNCTIONS):
                if i or j:  # a version replacing a running one starts as many containers as it ran
                    wisp_cli(env, "app", "stop", "egress-bench")
                wisp_cli(env, "deploy", str(script))  # a fresh version with no container
                cold[name].append(get(port, f"/egress-bench--{name}/?x=42"))  # `get` checks the answer: 1764
        return cold
    finally:
        wisp_cli(env, "server", "stop")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    cold = measure(args.cold_runs)
    load = os.getloadavg()[0]
    print(f"square webhook in the sandbox, {os.cpu_count()} cores, load {load_before:.2f} before / {load:.2f} "
          f"after, {args.cold_runs} cold runs each")
    print("| measure | network=True p50 ms | network=True p99 ms | no network p50 ms | no network p99 ms |")
    print("|---|---|---|---|---|")
    print(f"| cold start (no container -> response) | {ms(cold['networked'], .5)} | {ms(cold['networked'], .99)} | "
          f"{ms(cold['plain'], .5)} | {ms(cold['plain'], .99)} |")
    _results.write(args.json, "egress", {f"cold.{name}": ("ms", [s * 1000 for s in cold[name]]) for name in FUNCTIONS},
                   {"cold_runs": args.cold_runs})


if __name__ == "__main__":
    main()

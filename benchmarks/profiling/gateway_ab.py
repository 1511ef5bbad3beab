"""Interleaved A/B: one wisp server per source tree, wrk -c64 runs taking turns between them,
CPU µs/request of each server process (utime+stime from /proc, as benchmarks/throughput.py)."""
import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
import throughput as t  # its helpers: wisp_cli, wait_ready, wrk, cpu_seconds, free_port

parser = argparse.ArgumentParser()
parser.add_argument("trees", nargs="+", help="src folders (each put first on PYTHONPATH)")
parser.add_argument("--duration", type=int, default=5)
parser.add_argument("--rounds", type=int, default=4)
args = parser.parse_args()

envs, servers = [], {}
try:
    for tree in args.trees:
        home = tempfile.mkdtemp(prefix="wisp-ab-")
        script = Path(home) / "bench_tput.py"
        script.write_text(t.WISP_SCRIPT)
        port = t.free_port()
        env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port), "PYTHONPATH": tree}
        t.wisp_cli(env, "server", "start")
        envs.append(env)
        t.wisp_cli(env, "deploy", str(script))
        t.wait_ready(port, f"/{t.LABEL}/")
        pid = json.loads((Path(home) / "server.json").read_text())["pid"]
        servers[tree] = (pid, f"http://127.0.0.1:{port}/{t.LABEL}/")
        t.wrk(servers[tree][1], 64, 2)  # warm up
    results = {tree: [] for tree in args.trees}
    for r in range(args.rounds):
        for tree in args.trees if r % 2 == 0 else args.trees[::-1]:  # alternate the order
            pid, url = servers[tree]
            before = t.cpu_seconds([pid])
            m = t.wrk(url, 64, args.duration)
            results[tree].append(((t.cpu_seconds([pid]) - before) * 1e6 / m["requests"], m["rps"]))
            print(f"round {r} {tree}: {results[tree][-1][0]:.1f} µs/req, {m['rps']:.0f} req/s, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    for tree, runs in results.items():
        print(f"{tree}: median {statistics.median(u for u, _ in runs):.1f} µs/req, "
              f"{statistics.median(r for _, r in runs):.0f} req/s")
finally:
    for env in envs:
        t.wisp_cli(env, "server", "stop")

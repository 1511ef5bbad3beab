"""Containers on a Ray cluster's node against containers on the server's own machine (issue 14).

    .venv/bin/python -P benchmarks/cluster.py [--cold-runs 10] [--warm-requests 500] [--losses 3] [--json PATH]

Two servers with default settings, in one run, on the same webhook:
- `local`: `wisp server start` (the default runtime: containers forked from zygotes, on Unix sockets);
- `ray node`: `wisp server start --runtime ray` on a Ray cluster started here with
  ray.cluster_utils.Cluster (a head of 0 CPUs, so every container lands on a worker node of 1 CPU;
  every node on 127.0.0.1). Its containers are forked by the node's host agent and serve on TCP.
  The "remote" node shares this machine: the figures hold the cluster path's own cost (agent,
  TCP, placement), not a network's latency.

Cold start: the request sent with no container of the function running (scaledown_window=2,
waited out) -> whole response. Warm: sequential requests on one kept connection to a warm container.
Node loss (ray only): another app's function with min_containers=2 and cpu=1 (one container a
node) on three worker nodes; a node holding one of them is killed (`Cluster.remove_node`, no graceful exit; its
raylet and everything on it); detection = kill -> `wisp node list` says lost; restored = kill ->
the function has 2 ready containers again (one started on the spare node). Each loss adds a
fresh node first.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port

APP = '''import wisp

stub = wisp.Stub("bench-cluster")


@stub.webhook(scaledown_window=2)
def square(x: int = 2):
    return {"square": x**2}
'''
KEPT = '''import wisp

stub = wisp.Stub("bench-kept")


@stub.webhook(min_containers=2, cpu=1)
def kept():
    return {"kept": True}
'''
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024 * 1024}


class Server:
    def __init__(self, root: Path, *args: str) -> None:
        self.home = root / "home"
        self.port = free_port()
        self.env = {**os.environ, "WISP_HOME": str(self.home), "WISP_PORT": str(self.port)}
        self.args = args
        self.script = root / "bench_cluster.py"
        self.script.write_text(APP)

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "wisp.cli", *args], env=self.env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"`wisp {' '.join(args)}` exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def __enter__(self) -> Server:
        self.cli("server", "start", *self.args)
        self.cli("deploy", str(self.script))
        return self

    def __exit__(self, *exc: object) -> None:
        self.cli("server", "stop")

    def control(self, path: str) -> Any:
        info = json.loads((self.home / "server.json").read_text())
        token = (self.home / "token").read_text().strip()
        request = urllib.request.Request(f"http://127.0.0.1:{info['admin_port']}{path}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as answer:
            return json.loads(answer.read())

    def function(self, name: str, app_name: str = "bench-cluster") -> dict[str, Any]:
        (app,) = [a for a in self.control("/v1/apps")["apps"] if a["name"] == app_name]
        return next(e for e in app["endpoints"] if e["function"] == name)

    def containers(self, name: str) -> int:
        return sum(self.function(name)["containers"].values())

    def ready(self, name: str) -> int:
        states = self.function(name, "bench-kept")["containers"]
        return int(states.get("ready", 0)) + int(states.get("busy", 0))


def wait(predicate: Callable[[], bool], what: str, timeout: float = 120, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def timed_get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> float:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("GET", path)
    answer = conn.getresponse()
    body = answer.read()
    elapsed = time.perf_counter() - start
    if own:
        conn.close()
    if answer.status != 200:
        raise RuntimeError(f"GET {path}: {answer.status} {body[:300]!r}")
    return elapsed


def cold_and_warm(server: Server, cold_runs: int, warm_requests: int) -> tuple[list[float], list[float]]:
    cold = []
    for _ in range(cold_runs):
        wait(lambda: server.containers("square") == 0, "square's container to scale down", every=0.2)
        cold.append(timed_get(server.port, "/bench-cluster--square/?x=3"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    timed_get(server.port, "/bench-cluster--square/?x=3", conn)
    warm = [timed_get(server.port, "/bench-cluster--square/?x=3", conn) for _ in range(warm_requests)]
    conn.close()
    return cold, warm


def losses(server: Server, cluster: Any, count: int) -> tuple[list[float], list[float]]:
    kept = server.script.with_name("bench_kept.py")
    kept.write_text(KEPT)
    server.cli("deploy", str(kept))
    detected, restored = [], []
    for _ in range(count):
        known = len(server.control("/v1/nodes")["nodes"])
        spare = cluster.add_node(**NODE)
        wait(lambda n=known: len(server.control("/v1/nodes")["nodes"]) > n, "the new node to join", every=0.2)
        wait(lambda: server.ready("kept") == 2, "kept's 2 containers")
        by_name = {f"node-{n.node_id[:8]}": n for n in cluster.worker_nodes}
        holding = [n["name"] for n in server.control("/v1/nodes")["nodes"]
                   if n["state"] == "up" and n["containers"] and n["name"] in by_name]
        victim = by_name[holding[0]]
        name = holding[0]
        killed = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)
        seen = restored_at = None
        while seen is None or restored_at is None:
            if time.monotonic() - killed > 120:
                raise RuntimeError("the loss was not seen, or capacity not restored, within 120 s")
            state = {n["name"]: n["state"] for n in server.control("/v1/nodes")["nodes"]}
            if seen is None and state.get(name) == "lost":
                seen = time.monotonic() - killed
            if seen is not None and restored_at is None and server.ready("kept") == 2:
                restored_at = time.monotonic() - killed
            time.sleep(0.02)
        detected.append(seen)
        restored.append(restored_at)
        del spare
    return detected, restored


def ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--warm-requests", type=int, default=500)
    parser.add_argument("--losses", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="write the figures here (benchmarks/_results.py)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wisp-bc-"))
    os.chmod(root, 0o711)
    samples: dict[str, list[float]] = {}
    (root / "local").mkdir()
    with Server(root / "local") as server:
        samples["cold.local"], samples["warm.local"] = cold_and_warm(server, args.cold_runs, args.warm_requests)

    os.environ.update(RAY_TMPDIR=str(root / "ray"), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                      WISP_NODE_HOME=str(root / "nodes"))
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(**NODE)
        (root / "ray-server").mkdir()
        with Server(root / "ray-server", "--runtime", "ray", "--ray-address", cluster.address) as server:
            samples["cold.ray"], samples["warm.ray"] = cold_and_warm(server, args.cold_runs, args.warm_requests)
            samples["loss.detect"], samples["loss.restore"] = losses(server, cluster, args.losses)
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.cold_runs} cold starts, "
          f"{args.warm_requests} warm requests, {args.losses} node losses")
    print("| measure | local (default runtime) | ray node (--runtime ray) |")
    print("|---|---|---|")
    for what, key in (("cold start p50 ms", "cold"), ("warm request p50 ms", "warm")):
        q = 0.5
        print(f"| {what} | {ms(samples[key + '.local'], q):.2f} | {ms(samples[key + '.ray'], q):.2f} |")
        print(f"| {what.replace('p50', 'p99')} | {ms(samples[key + '.local'], 0.99):.2f} | "
              f"{ms(samples[key + '.ray'], 0.99):.2f} |")
    print(f"| node loss seen (s), median of {args.losses} | - | {statistics.median(samples['loss.detect']):.2f} "
          f"(max {max(samples['loss.detect']):.2f}) |")
    print(f"| capacity restored (s), median of {args.losses} | - | {statistics.median(samples['loss.restore']):.2f} "
          f"(max {max(samples['loss.restore']):.2f}) |")
    if args.json:
        _results.write(args.json, "cluster", {k: ("ms", [s * 1000 for s in v]) for k, v in samples.items()})


if __name__ == "__main__":
    main()

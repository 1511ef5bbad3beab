"""Two gateway processes on one port (SO_REUSEPORT) in front of the same containers, against one
(issue 16, point 5): what a second core buys the gateway on this machine.

    .venv/bin/python -P benchmarks/gateway_workers.py [--containers 2] [--connections 64] [--seconds 5] [--rounds 3] [--json PATH]

The containers are what wisp's are: uvicorn serving a FastAPI `async def` hello on a Unix socket,
--containers of them. Each gateway worker is wisp's gateway (`wisp.server.gateway.Gateway`, the
same protocol, upstream pool and exchange code as the server's), in a process of its own, bound
with SO_REUSEPORT to one port, so the kernel spreads client connections over the workers. wrk
(`-t2 -c64`) runs against one worker, then two, alternating, --rounds times.

What is shared and what is not: the workers share the port and the containers (each has its own
keep-alive connections to every container's socket). They share no pool state: a worker's route
hands out the containers round-robin with no limit, as a `@wisp.concurrent` function's pool
would with room to spare; nothing starts or stops containers, and no worker knows what another
has in flight. docs/architecture.md ("More than one core for the gateway") says what a real
multi-worker mode needs on top of this. On 2 cores, wrk, the containers and the workers share
the same two cores: the figure shows how much of the gateway's own ceiling a second process lifts
here, not what it would lift on a machine with cores to spare.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port
from throughput import DIRECT_APP, cpu_seconds, wait_ready, wrk

LABEL = "hello"


class Lease:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def release(self, *, broken: bool = False, status: int | None = None) -> None:
        pass


def worker(port: int, sockets: list[str]) -> None:
    """One gateway process: wisp's Gateway on a SO_REUSEPORT socket, one route over the containers."""
    from wisp.server.gateway import Gateway, PlainTarget

    class RoundRobin(PlainTarget):
        strip_path_prefix = True  # the containers serve at "/", as a web_server does

        def __init__(self) -> None:
            self._next = itertools.cycle([Lease(path) for path in sockets])

        def try_acquire(self) -> Lease:
            return next(self._next)

        async def acquire(self) -> Lease:
            return next(self._next)

    async def serve() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        gateway = Gateway({LABEL: RoundRobin()})
        await gateway.start("127.0.0.1", port, sock=sock)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await gateway.close()

    import uvloop

    uvloop.run(serve())


def start_containers(count: int, folder: Path) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    (folder / "direct_app.py").write_text(DIRECT_APP)
    procs, paths = [], []
    for i in range(count):
        path = str(folder / f"c{i}.sock")
        procs.append(subprocess.Popen([sys.executable, "-m", "uvicorn", "direct_app:app", "--uds", path, "--log-level",
                                       "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
                                      cwd=folder))
        paths.append(path)
    for path in paths:
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"container on {path} did not start within 30 s")
            time.sleep(0.05)
    return procs, paths


def start_workers(count: int, port: int, sockets: list[str]) -> list[subprocess.Popen[bytes]]:
    workers = [subprocess.Popen([sys.executable, "-P", __file__, "--worker", str(port), *sockets]) for _ in range(count)]
    try:
        wait_ready(port, f"/{LABEL}/")
    except RuntimeError:
        stop(workers)
        raise
    time.sleep(0.5)  # the second worker binds a moment after the first answers
    return workers


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(workers: int, sockets: list[str], connections: int, seconds: int) -> dict[str, float]:
    port = free_port()
    procs = start_workers(workers, port, sockets)
    try:
        url = f"http://127.0.0.1:{port}/{LABEL}/"
        wrk(url, connections, 1)  # warm-up: every worker's upstream connections open
        before = cpu_seconds([p.pid for p in procs])
        run = wrk(url, connections, seconds)
        cpu = cpu_seconds([p.pid for p in procs]) - before
        if run["errors"]:
            raise RuntimeError(f"{run['errors']} failed requests through {workers} gateway worker(s)")
        return {"rps": run["rps"], "p50": run["p50"], "p99": run["p99"], "cpu_us": cpu * 1e6 / run["requests"],
                "busy": run["machine_busy"]}
    finally:
        stop(procs)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="write the figures here (benchmarks/_results.py)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="wisp-gw-"))
    containers, sockets = start_containers(args.containers, folder)
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    try:
        for _ in range(args.rounds):
            for workers in (1, 2):
                runs[workers].append(measure(workers, sockets, args.connections, args.seconds))
    finally:
        stop(containers)
    print(f"wisp gateway workers on one port (SO_REUSEPORT), {args.containers} uvicorn containers, {os.cpu_count()} "
          f"cores, load {os.getloadavg()[0]:.2f}; wrk -t2 -c{args.connections} {args.seconds} s, median of {args.rounds}")
    print("| gateway workers | requests/s | p50 ms | p99 ms | gateway CPU µs/request | cores the gateway used | machine busy |")
    print("|---|---|---|---|---|---|---|")
    for workers, results in runs.items():
        med = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(f"| {workers} | {med['rps']:.0f} | {med['p50']:.2f} | {med['p99']:.2f} | {med['cpu_us']:.1f} | "
              f"{med['cpu_us'] * med['rps'] / 1e6:.2f} | {med['busy'] * 100:.0f} % |")
    ratio = [two["rps"] / one["rps"] * 100 for one, two in zip(runs[1], runs[2])]
    print(f"two workers / one, requests/s: {statistics.median(ratio):.0f} % (median of the rounds' ratios)")
    _results.write(args.json, "gateway_workers", {"ratio_pct": ("%", ratio), **{
        f"w{workers}.{key}": ("req/s" if key == "rps" else "ms" if key in ("p50", "p99") else "µs" if key == "cpu_us"
                              else "fraction", [r[key] for r in results])
        for workers, results in runs.items() for key in results[0]}},
        {"containers": args.containers, "connections": args.connections, "seconds": args.seconds})


if __name__ == "__main__":
    main()

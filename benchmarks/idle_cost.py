"""Idle cost of deployed functions scaled to zero, and the cold starts that cost buys (issue 16).

    .venv/bin/python -P benchmarks/idle_cost.py [--apps 20] [--functions 10] [--cold-runs 10] [--json PATH]

Idle cost: starts a wisp server (the default runtime, or WISP_RUNTIME), deploys --apps apps of --functions plain
webhooks each (scaledown_window=2), sends one request to every function, waits until every
container has scaled down and the zygotes have settled, and sums the PSS of every process below
the server (image and function zygotes, anything left), per deployed function. Side by side, in
the same run, the same with WISP_ZYGOTE_PER_FUNCTION=1 (one function zygote per function, as
before issue 16) and with one zygote per app version but no memory bound.

Cold starts (request sent with no container running -> full response), on one app whose
container has scaled down: its function zygote warm (default bound); released by the bound
(WISP_ZYGOTE_MEMORY_MB=0 while another app's warm container keeps the image zygote busy), so
re-created from the image zygote; and the image zygote released too (that other app stopped).
--json PATH writes the figures (see _results.py).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import app_pids, descendants, free_port, rollup

FUNCTION = '''

@stub.webhook(scaledown_window=2)
def f{i}(x: int = 2):
    return {{"app": {app!r}, "f": {i}, "square": x**2}}
'''
KEEPER = '''import wisp

stub = wisp.Stub("idle-keeper")


@stub.webhook(min_containers=1)
def warm():
    return {"warm": True}
'''
SETTLE = 12.0  # seconds after scale-down: the bound's tick runs each second, sizes are re-read every 10 s


def app_script(app: str, functions: int) -> str:
    return f"import wisp\n\nstub = wisp.Stub({app!r})\n" + "".join(FUNCTION.format(i=i, app=app) for i in range(functions))


class Server:
    def __init__(self, env: dict[str, str], home: str | None = None) -> None:
        """`home`: an existing WISP_HOME (its images, store and apps), else a new one."""
        self.home = home or tempfile.mkdtemp(prefix="wisp-idle-")
        self.port = free_port()
        # The runtime is the server's default (auto: the sandbox where the kernel allows it), or
        # WISP_RUNTIME from this script's environment.
        self.env = {**os.environ, "WISP_HOME": self.home, "WISP_PORT": str(self.port), **env}
        self.src = Path(tempfile.mkdtemp(prefix="wisp-idle-src-"))

    def cli(self, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "wisp.cli", *args], env=self.env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"`wisp {' '.join(args)}` exited {done.returncode}:\n{done.stdout}{done.stderr}")

    def __enter__(self) -> Server:
        self.cli("server", "start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.cli("server", "stop")

    @property
    def pid(self) -> int:
        return int(json.loads(Path(self.home, "server.json").read_text())["pid"])

    def deploy(self, name: str, text: str) -> None:
        (self.src / f"{name}.py").write_text(text)
        self.cli("deploy", str(self.src / f"{name}.py"))

    def get(self, path: str) -> float:
        """Seconds from sending the request to having the whole body; raises on anything but 200."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        start = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - start
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
        return elapsed

    def folder(self, app: str) -> str:
        return f"{os.path.realpath(self.home)}/apps/{app}/"

    def containers(self) -> int:
        """Processes below the server that serve requests (uvicorn in a container: cwd in an app's
        folder, parent of nothing in it)."""
        pids = app_pids(f"{os.path.realpath(self.home)}/apps/")
        return sum(1 for pid in pids if pid not in pids.values())


def wait(predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def idle_cost(env: dict[str, str], apps: int, functions: int) -> tuple[float, int]:
    """(total PSS MB of every process below the server, how many processes), all scaled to zero."""
    with Server(env) as server:
        names = [f"idle-{a:02d}" for a in range(apps)]
        for name in names:
            server.deploy(name, app_script(name, functions))
        for name in names:
            for i in range(functions):
                server.get(f"/{name}--f{i}/?x=3")
        # zero containers: every function zygote left is the parent of nothing
        wait(lambda: all(not any(p in app_pids(server.folder(n)).values() for p in app_pids(server.folder(n)))
                         for n in names), "every container to scale down", timeout=300)
        time.sleep(SETTLE)
        pids = descendants(server.pid)
        total = 0.0
        for pid in pids:
            try:
                total += rollup(pid)[0]
            except OSError:
                continue
        return total, len(pids)


def cold(server: Server, app: str, runs: int, released: Callable[[], bool]) -> list[float]:
    """Cold starts of app's f0: each once its container has scaled down and `released()` holds."""
    samples = []
    folder = server.folder(app)
    for _ in range(runs):
        wait(lambda: not any(p in app_pids(folder).values() for p in app_pids(folder)) and released(),
             "the container to scale down (and the zygotes to be released)")
        samples.append(server.get(f"/{app}--f0/?x=3"))
    return samples


def cold_starts(runs: int) -> dict[str, list[float]]:
    out = {}
    with Server({}) as server:  # the default bound: a lone app's function zygote stays
        server.deploy("idle-cold", app_script("idle-cold", 2))
        server.get("/idle-cold--f0/?x=3")
        out["warm_zygote"] = cold(server, "idle-cold", runs, lambda: True)
    with Server({"WISP_ZYGOTE_MEMORY_MB": "0"}) as server:
        server.deploy("idle-keeper", KEEPER)
        server.get("/idle-keeper--warm/")
        server.deploy("idle-cold", app_script("idle-cold", 2))
        server.get("/idle-cold--f0/?x=3")
        folder = server.folder("idle-cold")
        out["function_released"] = cold(server, "idle-cold", runs, lambda: not app_pids(folder))
        server.cli("app", "stop", "idle-keeper")
        out["image_released"] = cold(server, "idle-cold", runs, lambda: not descendants(server.pid))
    return out


def ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--functions", type=int, default=10, help="webhooks per app")
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--json", metavar="PATH", help="write the figures here (benchmarks/_results.py)")
    args = parser.parse_args()
    deployed = args.apps * args.functions
    variants = {
        "wisp": {},  # one zygote per app version, the default bound
        "unbounded": {"WISP_ZYGOTE_MEMORY_MB": "100000"},  # one per app version, nothing released
        "per_function": {"WISP_ZYGOTE_PER_FUNCTION": "1", "WISP_ZYGOTE_MEMORY_MB": "100000"},  # before issue 16
    }
    idle = {name: idle_cost(env, args.apps, args.functions) for name, env in variants.items()}
    starts = cold_starts(args.cold_runs)
    print(f"{args.apps} apps x {args.functions} webhooks deployed and scaled to zero, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| zygotes | processes | total PSS MB | PSS MB per deployed function | target |")
    print("|---|---|---|---|---|")
    labels = {"wisp": "one per app version, WISP_ZYGOTE_MEMORY_MB default (128)",
              "unbounded": "one per app version, no bound", "per_function": "one per function (before issue 16)"}
    for name, (total, count) in idle.items():
        print(f"| {labels[name]} | {count} | {total:.1f} | {total / deployed:.2f} | {'<= 1' if name == 'wisp' else ''} |")
    print()
    print(f"cold start after scale to zero, {args.cold_runs} runs each")
    print("| cold start | p50 ms | p99 ms |")
    print("|---|---|---|")
    cold_labels = {"warm_zygote": "function zygote warm", "function_released": "function zygote released "
                   "(re-created from the image zygote)", "image_released": "image zygote released too"}
    for name, samples in starts.items():
        print(f"| {cold_labels[name]} | {ms(samples, .5):.1f} | {ms(samples, .99):.1f} |")
    measured: dict[str, tuple[str, list[float | None]]] = {
        f"per_function.{name}": ("MB", [total / deployed]) for name, (total, _) in idle.items()}
    measured.update({f"cold.{name}": ("ms", [s * 1000 for s in samples]) for name, samples in starts.items()})
    _results.write(args.json, "idle_cost", measured, {
        "apps": args.apps, "functions": args.functions, "deployed": deployed,
        **{f"processes_{name}": count for name, (_, count) in idle.items()},
        **{f"total_pss_mb_{name}": round(total, 1) for name, (total, _) in idle.items()},
        "cold_p50_ms": {name: round(statistics.median(s) * 1000, 1) for name, s in starts.items()},
    })


if __name__ == "__main__":
    main()

"""Autoscaling: a burst from zero vs. onto warm containers, idle scale-down precision, and cold
vs. warm request latency.

    .venv/bin/python -P benchmarks/autoscale.py [--burst N] [--idle-timeouts 5,10] [--idle-runs 3] [--warm-requests 300]
                                                [--json PATH]

Starts its own wisp server (temporary WISP_HOME, free port) and deploys a small app it writes to a
temporary folder. The container counts come from the control API (GET /v1/apps, the token in
$WISP_HOME/token, the admin port in $WISP_HOME/server.json); all requests use the path URL
http://127.0.0.1:<port>/<label>/.

- Burst: `slow` sleeps 1 s (one request per container, the default). `--burst` threads (default:
  as many default containers as the machine fits, its cores over `cpu=0.125`, at most 32; the
  capacity rule queues any beyond them, so a larger burst can never be all running) send one
  request each at the same moment, with the function at 0 containers (cold burst); the control
  API is polled every 20 ms for the first time all of them are ready or busy. Then the same burst
  again while those containers are still up (warm burst, the baseline).
- Idle scale-down: `idleN` has container_idle_timeout=N. One request, then the control API is
  polled every 50 ms until the function shows 0 containers; reported is that idle time, counted
  from the end of the response, minus N. Each of these requests finds no container, so they are
  also the cold samples.
- Warm: sequential requests on one keep-alive connection to a warm `idleN` container.

--json PATH writes the measurements (see _results.py).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port
from wisp.server.runtime.cluster.placement import DEFAULT_CPU  # Modal's default cpu= (0.125 cores)

APP = "autoscalebench"
APP_HEAD = '''
import os
import time

import wisp

stub = wisp.Stub("autoscalebench")


@stub.webhook
def slow():
    time.sleep(1)
    return {"ok": True, "pid": os.getpid()}
'''
IDLE_FUNCTION = '''

@stub.webhook(container_idle_timeout={n})
def idle{n}():
    return {{"ok": True, "pid": os.getpid()}}
'''
BURST_POLL = 0.020
IDLE_POLL = 0.050
LIVE_STATES = ("starting", "ready", "busy")



def wisp_cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "wisp.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`wisp {' '.join(args)}` exited {done.returncode}:\n{done.stdout}{done.stderr}")


class Control:
    """The control API, on one keep-alive connection (one per thread)."""

    def __init__(self, home: Path) -> None:
        info = json.loads((home / "server.json").read_text())
        self.headers = {"Authorization": f"Bearer {(home / 'token').read_text().strip()}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", info["admin_port"], timeout=30)

    def get(self, path: str) -> bytes:
        try:
            self.conn.request("GET", path, headers=self.headers)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()  # uvicorn closes keep-alive connections idle for 5 s; open a new one
            self.conn.request("GET", path, headers=self.headers)
            resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path} -> {resp.status} {body[:300]!r}")
        return body

    def endpoint(self, function: str) -> dict:
        for app in json.loads(self.get("/v1/apps"))["apps"]:
            if app["id"] == APP:
                for ep in app["endpoints"]:
                    if ep["function"] == function:
                        return ep
        raise RuntimeError(f"the control API lists no endpoint {APP}/{function}")

    def metric(self, name: str, function: str) -> float | None:
        text = self.get("/metrics").decode()
        pattern = re.compile(rf'^{re.escape(name)}\{{app="{APP}",function="{function}"\}} (\S+)$', re.M)
        found = pattern.search(text)
        return float(found.group(1)) if found else None

    def close(self) -> None:
        self.conn.close()


def counts(ep: dict) -> tuple[int, int, int]:
    """(ready-or-busy, live = starting+ready+busy, total incl. draining) containers."""
    c = ep["containers"]
    return (c.get("ready", 0) + c.get("busy", 0), sum(c.get(s, 0) for s in LIVE_STATES), sum(c.values()))


def call(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


def check(status: int, body: bytes) -> int | None:
    """The container's pid if the answer is the expected one, else None."""
    if status != 200:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("pid") if data.get("ok") is True else None


# -- 1. burst ------------------------------------------------------------------------------------
def burst(home: Path, port: int, label: str, n: int) -> dict:
    path = f"/{label}/"
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=180) for _ in range(n)]
    for c in conns:
        c.connect()  # TCP set up beforehand: the burst is n requests, not n handshakes
    clock = {"t0": 0.0}
    # the requesters, the poller and this thread; the last to arrive stamps the start and releases all
    gate = threading.Barrier(n + 2, action=lambda: clock.__setitem__("t0", time.perf_counter()))
    results: list[tuple[float, int, bytes] | None] = [None] * n

    def one(i: int) -> None:
        gate.wait()
        try:
            status, body = call(conns[i], path)
        except Exception as exc:
            status, body = -1, repr(exc).encode()
        results[i] = (time.perf_counter(), status, body)

    poll = {"first_at": None, "full_at": None, "max_rb": 0, "max_total": 0, "max_queued": 0, "polls": 0}
    stop = threading.Event()

    def poller() -> None:
        control = Control(home)
        gate.wait()
        while not stop.is_set():
            ep = control.endpoint("slow")
            seen = time.perf_counter()
            rb, _, total = counts(ep)
            poll["polls"] += 1
            poll["max_rb"] = max(poll["max_rb"], rb)
            poll["max_total"] = max(poll["max_total"], total)
            poll["max_queued"] = max(poll["max_queued"], ep["queued"])
            if poll["first_at"] is None and rb >= 1:
                poll["first_at"] = seen - clock["t0"]
            if poll["full_at"] is None and rb >= n:
                poll["full_at"] = seen - clock["t0"]
            stop.wait(BURST_POLL)
        control.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    watcher = threading.Thread(target=poller)
    for t in [*threads, watcher]:
        t.start()
    gate.wait()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    for c in conns:
        c.close()
    t0 = clock["t0"]
    done = [r for r in results if r is not None]
    pids = [check(status, body) for _, status, body in done]
    failures = [(status, body[:200]) for (_, status, body), pid in zip(done, pids) if pid is None]
    return {
        "ok": sum(pid is not None for pid in pids),
        "n": n,
        "containers_answering": len({pid for pid in pids if pid is not None}),
        "first": min(r[0] for r in done) - t0,
        "last": max(r[0] for r in done) - t0,
        "failures": failures,
        **poll,
    }


# -- 2. idle scale-down (and the cold samples) ---------------------------------------------------------
def idle_run(home: Path, port: int, label: str, function: str, timeout: int) -> dict:
    control = Control(home)
    before = control.endpoint(function)["containers"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    status, body = call(conn, f"/{label}/")
    end = time.perf_counter()
    conn.close()
    result: dict = {"before": before, "cold": end - start, "ok": check(status, body) is not None,
                    "answer": (status, body[:200]), "stop_decided": None, "gone": None, "last_seen": None}
    deadline = end + timeout + 30
    while time.perf_counter() < deadline:
        ep = control.endpoint(function)
        seen = time.perf_counter()
        _, live, total = counts(ep)
        result["last_seen"] = ep["containers"]
        if result["stop_decided"] is None and live == 0:
            result["stop_decided"] = seen - end - timeout
        if total == 0:
            result["gone"] = seen - end - timeout
            break
        time.sleep(IDLE_POLL)
    control.close()
    return result


# -- 3. warm ----------------------------------------------------------------------------------------
def warm(port: int, label: str, n: int) -> tuple[list[float], list[tuple[int, bytes]]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = f"/{label}/"
    failures = []
    samples = []
    for i in range(20 + n):  # 20 to settle
        start = time.perf_counter()
        status, body = call(conn, path)
        elapsed = time.perf_counter() - start
        if check(status, body) is None:
            failures.append((status, body[:200]))
        elif i >= 20:
            samples.append(elapsed)
    conn.close()
    return samples, failures


def q(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def signed(x: float | None) -> str:
    return "never" if x is None else f"{x:+.2f}"


def save(path: str | None, args: argparse.Namespace, timeouts: list[int], cold_burst: dict, warm_burst: dict,
         idle: dict[int, list[dict]], cold: list[float], warm_samples: list[float], mean_start: float | None,
         problems: list[str]) -> None:
    """--json: bursts and idle offsets in s (null: never reached), request latencies in ms."""
    measured: dict[str, tuple[str, list[float | None]]] = {}
    for name, b in (("cold", cold_burst), ("warm", warm_burst)):
        measured[f"burst.{name}.full_s"] = ("s", [b["full_at"]])
        measured[f"burst.{name}.last_s"] = ("s", [b["last"]])
        measured[f"burst.{name}.failed"] = ("requests", [b["n"] - b["ok"]])
        measured[f"burst.{name}.containers"] = ("containers", [b["containers_answering"]])
    runs = [r for t in timeouts for r in idle[t]]
    measured["idle.offset_s"] = ("s", [r["gone"] for r in runs])
    measured["idle.decided_s"] = ("s", [r["stop_decided"] for r in runs])
    measured["cold_idle.wisp"] = ("ms", [c * 1000 for c in cold])
    measured["warm.wisp"] = ("ms", [w * 1000 for w in warm_samples])
    figures = {"burst_n": args.burst, "idle_timeouts": ", ".join(map(str, timeouts)), "idle_runs": args.idle_runs,
               "container_start_mean_s": mean_start}
    _results.write(path, "autoscale", measured, figures, problems)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=min(32, int((os.cpu_count() or 1) / DEFAULT_CPU)),
                        help="requests at once (default: the default containers the machine fits, at most 32)")
    parser.add_argument("--idle-timeouts", default="5,10", help="container_idle_timeout values, comma-separated (min 2)")
    parser.add_argument("--idle-runs", type=int, default=3)
    parser.add_argument("--warm-requests", type=int, default=300)
    parser.add_argument("--json", metavar="PATH", help="write the measurements here (benchmarks/_results.py)")
    args = parser.parse_args()
    timeouts = [int(x) for x in args.idle_timeouts.split(",")]

    load_start = os.getloadavg()
    began = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="wisp-autoscale-app-"))
    script = folder / "autoscalebench.py"
    script.write_text(APP_HEAD + "".join(IDLE_FUNCTION.format(n=n) for n in timeouts))
    home = Path(tempfile.mkdtemp(prefix="wisp-autoscale-home-"))
    port = free_port()
    env = {**os.environ, "WISP_HOME": str(home), "WISP_PORT": str(port)}
    problems: list[str] = []
    wisp_cli(env, "server", "start")
    try:
        wisp_cli(env, "deploy", str(script))
        control = Control(home)
        slow_label = control.endpoint("slow")["label"]
        labels = {n: control.endpoint(f"idle{n}")["label"] for n in timeouts}

        # 1. burst from zero, then the same burst onto the containers it left
        cold_burst = burst(home, port, slow_label, args.burst)
        start_sum = control.metric("wisp_cold_start_seconds_sum", "slow")
        start_count = control.metric("wisp_cold_start_seconds_count", "slow")
        between = control.endpoint("slow")["containers"]
        warm_burst = burst(home, port, slow_label, args.burst)
        after = control.endpoint("slow")["containers"]
        control.close()
        for name, b in (("cold", cold_burst), ("warm", warm_burst)):
            if b["failures"]:
                problems.append(f"{name} burst: {len(b['failures'])} of {b['n']} requests failed, e.g. "
                                f"{b['failures'][:3]}")
            if b["full_at"] is None:
                problems.append(f"{name} burst: the control API never showed {b['n']} ready-or-busy containers "
                                f"(max {b['max_rb']}, max total {b['max_total']})")

        # free the burst's containers: stop the app, deploy it again (a new version with none)
        wisp_cli(env, "app", "stop", APP)
        wisp_cli(env, "deploy", str(script))

        # 2. idle scale-down; each first request is also a cold sample
        idle: dict[int, list[dict]] = {n: [] for n in timeouts}
        for n in timeouts:
            for run in range(args.idle_runs):
                r = idle_run(home, port, labels[n], f"idle{n}", n)
                idle[n].append(r)
                if not r["ok"]:
                    problems.append(f"idle{n} run {run + 1}: GET /{labels[n]}/ answered {r['answer']}")
                if sum(r["before"].values()):
                    problems.append(f"idle{n} run {run + 1}: containers before the request: {r['before']}")
                if r["gone"] is None:
                    problems.append(f"idle{n} run {run + 1}: still {r['last_seen']} {n + 30} s after the response")
        cold = [r["cold"] for runs in idle.values() for r in runs if r["ok"]]

        # 3. warm latency, same trivial handler
        warm_samples, warm_failures = warm(port, labels[timeouts[-1]], args.warm_requests)
        if warm_failures:
            problems.append(f"warm: {len(warm_failures)} requests failed, e.g. {warm_failures[:3]}")
    finally:
        wisp_cli(env, "server", "stop")
    took = time.perf_counter() - began
    load_end = os.getloadavg()

    def s(x: float | None) -> str:
        return "never" if x is None else f"{x:.2f}"

    n = args.burst
    print(f"autoscaling, {os.cpu_count()} cores, load average {load_start[0]:.2f} {load_start[1]:.2f} "
          f"{load_start[2]:.2f} at the start, {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end; "
          f"Python {sys.version.split()[0]}; whole run {took:.0f} s")
    print()
    print(f"| {n} concurrent 1 s requests, 1 per container | cold burst (0 containers) | "
          f"warm burst ({n} up) | target |")
    print("|---|---|---|---|")
    print(f"| 200 responses | {cold_burst['ok']}/{n} | {warm_burst['ok']}/{n} | all 200 |")
    print(f"| distinct containers that answered | {cold_burst['containers_answering']} | "
          f"{warm_burst['containers_answering']} | {n} |")
    print(f"| burst start -> control API shows {n} ready-or-busy, s | {s(cold_burst['full_at'])} | "
          f"{s(warm_burst['full_at'])} | ≤ 1 |")
    print(f"| burst start -> control API shows the first ready-or-busy, s | {s(cold_burst['first_at'])} | "
          f"{s(warm_burst['first_at'])} | |")
    print(f"| burst start -> first response, s | {cold_burst['first']:.2f} | {warm_burst['first']:.2f} | |")
    print(f"| burst start -> last response, s | {cold_burst['last']:.2f} | {warm_burst['last']:.2f} | |")
    print(f"| containers reached: max ready-or-busy / max incl. starting+draining | "
          f"{cold_burst['max_rb']} / {cold_burst['max_total']} | {warm_burst['max_rb']} / {warm_burst['max_total']} | {n} |")
    print(f"| max queued in the gateway | {cold_burst['max_queued']} | {warm_burst['max_queued']} | |")
    mean_start = (start_sum / start_count) if start_sum is not None and start_count else None
    print(f"| container start -> ready, mean over the burst (server's wisp_cold_start_seconds), s | "
          f"{s(mean_start)} ({start_count or 0:.0f} starts) | no new starts | |")
    print(f"| control API polls (every {BURST_POLL * 1000:.0f} ms) | {cold_burst['polls']} | {warm_burst['polls']} | |")
    print()
    print(f"containers of `slow` between the bursts: {between}; after the warm burst: {after}")
    print()
    print("| container_idle_timeout N | (response end -> 0 containers) − N per run, s "
          "[(response end -> none starting/ready/busy, i.e. stop decided) − N] | median, s | target |")
    print("|---|---|---|---|")
    for t in timeouts:
        runs = ", ".join(f"{signed(r['gone'])} [{signed(r['stop_decided'])}]" for r in idle[t])
        measured = [r["gone"] for r in idle[t] if r["gone"] is not None]
        median = f"{statistics.median(measured):+.2f}" if measured else "never"
        print(f"| {t} s | {runs} | {median} | ±2 |")
    print()
    print("| request | samples | p50 ms | p99 ms | target |")
    print("|---|---|---|---|---|")
    if cold:
        print(f"| cold: scaled to zero by the idle timeout -> response | {len(cold)} | {q(cold, .5) * 1000:.2f} | "
              f"{q(cold, .99) * 1000:.2f} | p50 ≤ 50, p99 ≤ 150 |")
    else:
        print("| cold: scaled to zero by the idle timeout -> response | 0 | - | - | p50 ≤ 50, p99 ≤ 150 |")
    if warm_samples:
        print(f"| warm: one keep-alive connection, sequential | {len(warm_samples)} | "
              f"{q(warm_samples, .5) * 1000:.2f} | {q(warm_samples, .99) * 1000:.2f} | |")
    save(args.json, args, timeouts, cold_burst, warm_burst, idle, cold, warm_samples, mean_start, problems)
    if problems:
        print()
        print("Problems seen (WISP_HOME kept for its logs: " + str(home) + "):")
        for p in problems:
            print(f"- {p}")
    else:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

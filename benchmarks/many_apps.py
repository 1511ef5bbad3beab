"""Many apps, flat per-request cost (issue 16, point 3): the gateway's CPU per request, a big deploy
and `wisp app list`, each beside its one-app baseline in the same run.

    .venv/bin/python -P benchmarks/many_apps.py [--apps 500] [--functions 4] [--big 200] [--rounds 5] [--json PATH]

Two wisp servers (the default runtime, or WISP_RUNTIME) run side by side: "one" serves a single app with one web
function; "many" serves the same app plus --apps apps of --functions webhooks each (500 x 4 =
2,000 routes besides it). Both serve the measured function, `@wisp.concurrent` so that one warm
container takes the whole load and the figure is the gateway's, not container starts.

- CPU per request: `wrk -t1 -c8` for --seconds against each server in turn (one, many, one, many,
  ... --rounds times, so that the load other programs put on the machine falls on both alike);
  the server process's CPU time (all its threads: gateway, control API, ticks) over the requests
  wrk completed. Its idle CPU (no requests, --seconds) is printed beside it: what 2,000 pools cost
  when nothing happens.
- Deploy: `wisp deploy` of an app with --big plain webhooks on the "many" server, its image already
  built (the wall time of the command, as a user sees it: first deploy, then redeploys), beside
  the deploy of a one-function app; then every one of its routes is asked once and must answer.
- `wisp app list`: the wall time of the command against "many" (--apps + 2 apps) and "one".
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from idle_cost import Server
from throughput import cpu_seconds, wrk

HOT = '''import wisp

stub = wisp.Stub("hot")


@stub.function(keep_warm=1)
@wisp.concurrent(max_inputs=1000)
@wisp.fastapi_endpoint()
async def f():
    return {"hello": "world"}
'''
WEBHOOK = '''

@stub.webhook()
def f{i}(x: int = 2):
    return {{"f": {i}, "square": x**2}}
'''
PARALLEL_DEPLOYS = 4  # CLI processes deploying the many apps at once (only to fill the server sooner)


def app_script(name: str, functions: int) -> str:
    return f"import wisp\n\nstub = wisp.Stub({name!r})\n" + "".join(WEBHOOK.format(i=i) for i in range(functions))


def timed(server: Server, *args: str) -> float:
    """Wall seconds of one `wisp ...` command, as a user at a shell waits for it."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "wisp.cli", *args], env=server.env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"`wisp {' '.join(args)}` exited {done.returncode}: {done.stderr}")
    return elapsed


def script(server: Server, name: str, text: str) -> str:
    """The app's script, in a folder of its own: a deploy ships the files beside its script."""
    folder = server.src / name
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(text)
    return str(folder / f"{name}.py")


def deploy_timed(server: Server, name: str, text: str) -> float:
    return timed(server, "deploy", script(server, name, text))


def fill(server: Server, apps: int, functions: int) -> None:
    paths = [script(server, name, app_script(name, functions)) for name in (f"many-{a:03d}" for a in range(apps))]
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_DEPLOYS) as pool:
        list(pool.map(lambda path: server.cli("deploy", path), paths))


def all_answer(server: Server, app: str, functions: int) -> int:
    """How many of the app's routes answered 200 with their own function's body."""
    ok = 0
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    for i in range(functions):
        conn.request("GET", f"/{app}--f{i}/?x=3")
        resp = conn.getresponse()
        body = resp.read()
        ok += resp.status == 200 and body == f'{{"f":{i},"square":9}}'.encode()
    conn.close()
    return ok


def cpu_per_request(server: Server, seconds: int) -> float:
    """µs of the server process's CPU per request wrk completed."""
    before = cpu_seconds([server.pid])
    run = wrk(f"http://127.0.0.1:{server.port}/hot--f/", 8, seconds)
    if run["errors"]:
        raise RuntimeError(f"{run['errors']} failed requests against the hot function")
    return (cpu_seconds([server.pid]) - before) * 1e6 / run["requests"]


def idle_cpu(server: Server, seconds: int) -> float:
    """ms of the server process's CPU per second with no requests."""
    before = cpu_seconds([server.pid])
    time.sleep(seconds)
    return (cpu_seconds([server.pid]) - before) * 1000 / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=500, help="apps on the 'many' server besides the hot one")
    parser.add_argument("--functions", type=int, default=4, help="webhooks per app")
    parser.add_argument("--big", type=int, default=200, help="functions of the big app")
    parser.add_argument("--rounds", type=int, default=5, help="wrk runs per server, alternating")
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run and per idle CPU reading")
    parser.add_argument("--deploys", type=int, default=3, help="deploys of the big app (the first creates it)")
    parser.add_argument("--lists", type=int, default=10, help="`wisp app list` runs per server")
    parser.add_argument("--json", metavar="PATH", help="write the figures here (benchmarks/_results.py)")
    args = parser.parse_args()
    with Server({}) as one, Server({}) as many:
        for server in (one, many):
            server.deploy("hot", HOT)
            server.get("/hot--f/")
        started = time.perf_counter()
        fill(many, args.apps, args.functions)
        filled = time.perf_counter() - started
        small = [deploy_timed(many, "small", app_script("small", 1)) for _ in range(args.deploys)]
        big = [deploy_timed(many, "big", app_script("big", args.big)) for _ in range(args.deploys)]
        answered = all_answer(many, "big", args.big)
        if answered != args.big:
            raise RuntimeError(f"only {answered} of the big app's {args.big} routes answered")
        routes = args.apps * args.functions + args.big + 2
        lists = {name: [timed(server, "app", "list") for _ in range(args.lists)]
                 for name, server in (("one", one), ("many", many))}
        cpu: dict[str, list[float]] = {"one": [], "many": []}
        idle: dict[str, list[float]] = {"one": [], "many": []}
        for _ in range(args.rounds):
            for name, server in (("one", one), ("many", many)):
                cpu[name].append(cpu_per_request(server, args.seconds))
        for _ in range(2):
            for name, server in (("one", one), ("many", many)):
                idle[name].append(idle_cpu(server, args.seconds))
    med = {name: statistics.median(values) for name, values in cpu.items()}
    ratio = [m / o * 100 - 100 for o, m in zip(cpu["one"], cpu["many"])]
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; 'many' server: {args.apps} apps x "
          f"{args.functions} webhooks + big app ({args.big}) + hot = {routes} routes, filled in {filled:.0f} s")
    print("| measure | one route / one app | many | target |")
    print("|---|---|---|---|")
    print(f"| server CPU per request, wrk -c8, µs (median of {args.rounds}) | {med['one']:.1f} | {med['many']:.1f} "
          f"({statistics.median(ratio):+.1f} %) | within 5 % |")
    print(f"| server CPU while idle, ms per s | {statistics.median(idle['one']):.1f} | "
          f"{statistics.median(idle['many']):.1f} | |")
    print(f"| `wisp deploy`, s (1 function / {args.big} functions; first, then redeploys) | "
          f"{' '.join(f'{s:.2f}' for s in small)} | {' '.join(f'{s:.2f}' for s in big)} | <= 2 s |")
    print(f"| `wisp app list`, ms (p50 of {args.lists}) | {statistics.median(lists['one']) * 1000:.0f} | "
          f"{statistics.median(lists['many']) * 1000:.0f} | <= 300 ms |")
    _results.write(args.json, "many_apps", {
        "cpu_us.one": ("µs", cpu["one"]), "cpu_us.many": ("µs", cpu["many"]), "cpu_pct.many": ("%", ratio),
        "idle_ms.one": ("ms", idle["one"]), "idle_ms.many": ("ms", idle["many"]),
        "deploy.small": ("s", small), "deploy.big": ("s", big),
        "list_ms.one": ("ms", [s * 1000 for s in lists["one"]]), "list_ms.many": ("ms", [s * 1000 for s in lists["many"]]),
    }, {"apps": args.apps + 3, "routes": routes, "big": args.big, "fill_s": round(filled, 1)})


if __name__ == "__main__":
    main()

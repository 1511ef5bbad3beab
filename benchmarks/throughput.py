"""Warm throughput of a FastAPI hello endpoint: direct uvicorn vs. through wisp vs. nginx proxy.

    .venv/bin/python -P benchmarks/throughput.py [--duration 10] [--connections 64] [--json PATH]

Needs `wrk` (apt-get install -y wrk) and, for the nginx row, `nginx`
(apt-get install -y nginx-light). DESIGN.md §6, first row: through the gateway >= 85 % of
direct throughput at 64 clients, p50 + <= 0.15 ms at 1 client, gateway CPU <= 60 µs/request.

In one run, with `wrk -t2 -c64 --latency` and `wrk -t1 -c1 --latency`:
- direct: the app under `python -m uvicorn --loop uvloop --http httptools` on TCP;
- wisp: starts its own wisp server (temporary WISP_HOME, free port), deploys the endpoint with
  keep_warm=1 and @wisp.concurrent(max_inputs=1000) so one container takes every request,
  and loads `http://127.0.0.1:<port>/<label>/`;
- nginx: nginx (1 worker, upstream keepalive 64) as a reverse proxy in front of the direct uvicorn.
CPU per request during the 64-connection runs: utime+stime from /proc/<pid>/stat of the wisp
server process (pid from $WISP_HOME/server.json), and of all nginx processes, over the
requests wrk completed.

--json PATH writes this run's figures, one value per series (run_all.py repeats the script and
pools them), plus wrk's own CPU use during each run, to show whether the load generator was the
limit (see _results.py).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port

APP_NAME = "bench-tput"
FUNCTION = "hello"
LABEL = f"{APP_NAME}--{FUNCTION}"
EXPECTED = {"hello": "world"}

WISP_SCRIPT = f'''
import wisp

stub = wisp.Stub("{APP_NAME}")


@stub.function(keep_warm=1)
@wisp.concurrent(max_inputs=1000)
@wisp.fastapi_endpoint()
async def {FUNCTION}():
    return {{"hello": "world"}}
'''

# What a user with default settings writes: no concurrency, no warm pool (issue 15, point 3).
DEFAULT_SCRIPT = f'''
import wisp

stub = wisp.Stub("{APP_NAME}")


@stub.webhook
def {FUNCTION}():
    return {{"hello": "world"}}
'''

DEFAULT_ASYNC_SCRIPT = DEFAULT_SCRIPT.replace("def ", "async def ")

DIRECT_APP = '''
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello():
    return {"hello": "world"}
'''

NGINX_CONF = """
daemon off;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

CLK_TCK = os.sysconf("SC_CLK_TCK")



def check(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200 or json.loads(body) != EXPECTED:
        raise RuntimeError(f"unexpected answer from :{port}{path}: {resp.status} {body!r}")


def wait_ready(port: int, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            check(port, path)
            return
        except (OSError, RuntimeError, ValueError, http.client.HTTPException) as e:
            last = e
            time.sleep(0.05)
    raise RuntimeError(f"no good answer from :{port}{path} within {timeout}s: {last!r}")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk is the only one reaped during a run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wrk(url: str, connections: int, duration: int) -> dict:
    threads = 1 if connections == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    cpu, busy, wall = children_cpu(), machine_busy(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - wall
    busy_after = machine_busy()
    result = {
        "threads": threads,
        "wrk_cpu_s": children_cpu() - cpu,
        "wall_s": wall,
        # of all cores: how busy the machine was while wrk ran (1.0 = every core busy)
        "machine_busy": (busy_after[0] - busy[0]) / max(1, busy_after[1] - busy[1]),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": parse_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": parse_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "errors": 0,
    }
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    if result["errors"]:
        print(f"warning: {result['errors']} errors from {' '.join(cmd)}:\n{out}", file=sys.stderr)
    return result


def load(url: str, duration: int, connections: int, cpu_pids: list[int] | None = None) -> dict:
    """Warm up, then the many-connection run (with CPU of cpu_pids), then the 1-connection run."""
    wrk(url, connections, 2)
    before = cpu_seconds(cpu_pids) if cpu_pids else 0.0
    many = wrk(url, connections, duration)
    if cpu_pids:
        many["cpu_us"] = (cpu_seconds(cpu_pids) - before) * 1e6 / many["requests"]
    one = wrk(url, 1, duration)
    return {"many": many, "one": one}


def wisp_cli(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "wisp.cli", *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"wisp {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def measure_wisp(duration: int, connections: int, source: str = WISP_SCRIPT, **extra_env: str) -> dict:
    home = tempfile.mkdtemp(prefix="wisp-bench-tput-")
    script = Path(home) / "bench_tput.py"
    script.write_text(source)
    port = free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port), **extra_env}
    wisp_cli(env, "server", "start")
    try:
        pid = json.loads((Path(home) / "server.json").read_text())["pid"]
        wisp_cli(env, "deploy", str(script))
        path = f"/{LABEL}/"
        wait_ready(port, path)
        return load(f"http://127.0.0.1:{port}{path}", duration, connections, [pid])
    finally:
        wisp_cli(env, "server", "stop")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_direct_and_nginx(duration: int, connections: int) -> tuple[dict, dict | None]:
    folder = Path(tempfile.mkdtemp(prefix="wisp-bench-tput-direct-"))
    (folder / "app.py").write_text(DIRECT_APP)
    port = free_port()
    uvicorn = subprocess.Popen([sys.executable, "-m", "uvicorn", "app:app", "--port", str(port),
                                "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                                "--log-level", "warning"], cwd=folder)
    try:
        wait_ready(port, "/")
        direct = load(f"http://127.0.0.1:{port}/", duration, connections)
        nginx_bin = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
        if nginx_bin is None:
            return direct, None
        tmp = Path(tempfile.mkdtemp(prefix="wisp-bench-tput-nginx-"))
        nginx_port = free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(user=user, tmp=tmp, upstream=port, port=nginx_port))
        nginx = subprocess.Popen([nginx_bin, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
        try:
            wait_ready(nginx_port, "/")
            pids = [nginx.pid, *children(nginx.pid)]
            proxied = load(f"http://127.0.0.1:{nginx_port}/", duration, connections, pids)
        finally:
            stop(nginx)
        return direct, proxied
    finally:
        stop(uvicorn)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", metavar="PATH", help="write this run's figures here (benchmarks/_results.py)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu) or brew install wrk")
    direct, nginx = measure_direct_and_nginx(args.duration, args.connections)
    wisp = measure_wisp(args.duration, args.connections)
    default = measure_wisp(args.duration, args.connections, DEFAULT_SCRIPT)
    default_async = measure_wisp(args.duration, args.connections, DEFAULT_ASYNC_SCRIPT)
    uncapped = measure_wisp(args.duration, args.connections, DEFAULT_SCRIPT, WISP_CPU_LIMIT="1000")
    c = args.connections
    la = os.getloadavg()
    print(f"FastAPI async hello, {os.cpu_count()} cores, load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, "
          f"wrk {args.duration}s per run (-t2 -c{c} and -t1 -c1, --latency)")
    print()
    print("| setup | conns | requests/s | p50 ms | p99 ms | errors | CPU µs/request |")
    print("|---|---|---|---|---|---|---|")
    rows = [("direct uvicorn (uvloop+httptools)", direct), ("through wisp gateway", wisp),
            ("wisp, default settings (plain @stub.webhook, def)", default),
            ("wisp, default settings (plain @stub.webhook, async def)", default_async),
            ("wisp, default settings, no capacity rule (WISP_CPU_LIMIT=1000)", uncapped)]
    if nginx is not None:
        rows.append(("nginx proxy -> direct uvicorn", nginx))
    for name, r in rows:
        for key, conns in (("many", c), ("one", 1)):
            m = r[key]
            cpu = f"{m['cpu_us']:.1f}" if "cpu_us" in m else ""
            print(f"| {name} | {conns} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['errors']} | {cpu} |")
    print()
    print("| measure | value | target (DESIGN.md §6) |")
    print("|---|---|---|")
    print(f"| wisp throughput at {c} conns, % of direct | {100 * wisp['many']['rps'] / direct['many']['rps']:.1f} % "
          f"| >= 85 % |")
    for kind, r in (("def", default), ("async def", default_async)):
        print(f"| wisp default settings ({kind}) at {c} conns, % of direct | "
              f"{100 * r['many']['rps'] / direct['many']['rps']:.1f} % | >= 85 % |")
        print(f"| wisp default settings ({kind}) added p50 at 1 conn | "
              f"{r['one']['p50'] - direct['one']['p50']:.3f} ms | <= 0.15 ms |")
    print(f"| wisp default settings (def) without the capacity rule, % of direct | "
          f"{100 * uncapped['many']['rps'] / direct['many']['rps']:.1f} % | |")
    print(f"| wisp added p50 at 1 conn | {wisp['one']['p50'] - direct['one']['p50']:.3f} ms | <= 0.15 ms |")
    print(f"| wisp gateway CPU per request ({c} conns) | {wisp['many']['cpu_us']:.1f} µs | <= 60 µs |")
    if nginx is not None:
        print(f"| nginx CPU per request ({c} conns) | {nginx['many']['cpu_us']:.1f} µs | anchor 38–44 µs |")
        print(f"| nginx throughput at {c} conns, % of direct | "
              f"{100 * nginx['many']['rps'] / direct['many']['rps']:.1f} % | |")
        print(f"| nginx added p50 at 1 conn | {nginx['one']['p50'] - direct['one']['p50']:.3f} ms | |")
    else:
        print("| nginx | skipped: nginx not installed (apt-get install -y nginx-light) | |")
    print(f"| cores / load average (1, 5, 15 min) | {os.cpu_count()} / {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} | |")
    save(args.json, args, direct, wisp, nginx, default, uncapped, default_async)


def save(path: str | None, args: argparse.Namespace, direct: dict, wisp: dict, nginx: dict | None,
         default: dict | None = None, uncapped: dict | None = None, default_async: dict | None = None) -> None:
    """--json: one value per series for this run; wrk's CPU per many-connection run, to check it is not the limit."""
    measured: dict[str, tuple[str, list[float | None]]] = {}
    sides = {"direct": direct, "wisp": wisp, **({"nginx": nginx} if nginx is not None else {}),
             **({"wisp_default": default} if default is not None else {}),
             **({"wisp_uncapped": uncapped} if uncapped is not None else {}),
             **({"wisp_default_async": default_async} if default_async is not None else {})}
    for side, r in sides.items():
        for key in ("many", "one"):
            m = r[key]
            measured[f"{key}.{side}.rps"] = ("req/s", [m["rps"]])
            measured[f"{key}.{side}.p50"] = ("ms", [m["p50"]])
            measured[f"{key}.{side}.p99"] = ("ms", [m["p99"]])
            measured[f"{key}.{side}.errors"] = ("requests", [m["errors"]])
            if "cpu_us" in m:
                measured[f"{key}.{side}.cpu_us"] = ("µs", [m["cpu_us"]])
        measured[f"wrk.{side}.cpu_s"] = ("s", [r["many"]["wrk_cpu_s"]])
        measured[f"wrk.{side}.wall_s"] = ("s", [r["many"]["wall_s"]])
        measured[f"machine_busy.{side}"] = ("fraction of all cores", [r["many"]["machine_busy"]])
        if side != "direct":
            measured[f"ratio.{side}_pct"] = ("%", [100 * r["many"]["rps"] / direct["many"]["rps"]])
            measured[f"added_p50.{side}"] = ("ms", [r["one"]["p50"] - direct["one"]["p50"]])
    figures = {"connections": args.connections, "duration_s": args.duration, "wrk_threads": wisp["many"]["threads"],
               "nginx": nginx is not None}
    notes = [] if nginx is not None else ["nginx not installed: no nginx row (apt-get install -y nginx-light)"]
    _results.write(path, "throughput", measured, figures, notes)


if __name__ == "__main__":
    main()

"""Where the CPU of a default-settings webhook goes under load: the server process and everything
it started (containers, zygotes), in µs per request, at 64 keep-alive clients (wrk -t2 -c64).
Beside them: wrk's own CPU, how busy the machine's cores were, all their busy time per request,
and the machine's context switches and rescheduling / function-call IPIs per request (from
/proc/stat and /proc/interrupts: an IPI is a cross-core wakeup, dear in a virtual machine).

    .venv/bin/python -P benchmarks/profiling/default_cpu.py {def,async,concurrent} [--duration 5]

`def`/`async`: a plain @stub.webhook (one input per container, the capacity rule's containers);
`concurrent`: the same endpoint under @wisp.concurrent(max_inputs=1000) in one container, for
reference. The probe behind docs/profiling.md's "Default settings under load".
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
import _machine
import throughput as t  # its helpers: wisp_cli, wait_ready, wrk, cpu_seconds

SCRIPTS = {"def": t.DEFAULT_SCRIPT, "async": t.DEFAULT_ASYNC_SCRIPT, "concurrent": t.WISP_SCRIPT}


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of `pid` alone, and of its descendants that are alive now."""
    alive = []
    for child in _machine.descendants(pid):
        try:
            t.cpu_seconds([child])
            alive.append(child)
        except OSError:
            continue
    return t.cpu_seconds([pid]), t.cpu_seconds(alive)


def counters() -> dict[str, int]:
    """The machine's context switches and its rescheduling (RES) and function-call (CAL) IPIs so far."""
    found = {"cs": int(next(line for line in Path("/proc/stat").read_text().splitlines()
                            if line.startswith("ctxt ")).split()[1])}
    for line in Path("/proc/interrupts").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in ("RES:", "CAL:"):
            found[fields[0][:3]] = sum(int(f) for f in fields[1:] if f.isdigit())
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(SCRIPTS))
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="wisp-profile-default-")
    script = Path(home) / "app.py"
    script.write_text(SCRIPTS[args.kind])
    port = t.free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port)}
    t.wisp_cli(env, "server", "start")
    try:
        pid = json.loads((Path(home) / "server.json").read_text())["pid"]
        t.wisp_cli(env, "deploy", str(script))
        url = f"http://127.0.0.1:{port}/{t.LABEL}/"
        t.wait_ready(port, f"/{t.LABEL}/")
        t.wrk(url, 64, 2)  # warm up: the containers the load wants are running
        server, others, before = *tree_cpu(pid), counters()
        run = t.wrk(url, 64, args.duration)
        server_after, others_after, after = *tree_cpu(pid), counters()
        n = run["requests"]
        cores = os.cpu_count() or 1
        print(f"{args.kind}: {run['rps']:.0f} req/s, server {1e6 * (server_after - server) / n:.1f} µs/request, "
              f"containers and zygotes {1e6 * (others_after - others) / n:.1f} µs/request, "
              f"wrk {1e6 * run['wrk_cpu_s'] / n:.1f} µs/request; cores {100 * run['machine_busy']:.0f} % busy, "
              f"{1e6 * run['machine_busy'] * cores * run['wall_s'] / n:.1f} µs of them per request; per request "
              + ", ".join(f"{name} {(after[name] - before[name]) / n:.2f}" for name in before)
              + f"; {len(_machine.descendants(pid))} processes, load {os.getloadavg()[0]:.2f}")
    finally:
        t.wisp_cli(env, "server", "stop")


if __name__ == "__main__":
    main()

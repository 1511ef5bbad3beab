"""Run every benchmark in this folder and print one table: wisp and its baselines, side by side.

    .venv/bin/python -P benchmarks/run_all.py             # the full run: about 16 minutes on 2 cores
    .venv/bin/python -P benchmarks/run_all.py --write     # ... and put its table at the top of BENCHMARKS.md
    .venv/bin/python -P benchmarks/run_all.py --quick     # short runs, to check the machinery (~3 min)
    .venv/bin/python -P benchmarks/run_all.py --from DIR  # the table again, from a run's saved results

Each script starts and stops its own wisp server and baselines, and writes what it measured with
`--json` (see _results.py); its own tables go to a log beside the JSON, in --out (a new temporary
folder unless given). `throughput` runs --repeat times (default 3), so its rows are the median and
p99 over those runs; it needs wrk, and nginx for its nginx baseline: `apt-get install wrk nginx-light`.
Processes a script leaves running (a server stuck in its shutdown) are stopped before the next
one starts and named under the table. The rows and the met/missed judgement are in _table.py.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TAG = "WISP_BENCH_RUN"  # in the environment of each script run_all starts, inherited by what it starts
LEFTOVER_GRACE = 10.0  # seconds a script's processes get to exit on their own after the script has
sys.path.append(str(HERE))  # -P leaves the script's folder out of sys.path
import _table  # noqa: E402  (benchmarks/_table.py)

BENCHMARKS_MD = HERE.parent / "BENCHMARKS.md"


@dataclass(frozen=True)
class Step:
    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    repeated: bool = False  # run --repeat times, results pooled


STEPS = (
    Step("sandbox", ("--cold-runs", "20"), ("--cold-runs", "3", "--warm-requests", "50")),
    Step("cold_warm", ("--also-fresh", "--cold-runs", "20"), ("--also-fresh", "--cold-runs", "3", "--warm-requests", "100")),
    Step("autoscale", (), ("--burst", "8", "--idle-timeouts", "2", "--idle-runs", "1", "--warm-requests", "50")),
    Step("memory", (), ("--containers", "2",)),
    Step("idle_cost", (), ("--apps", "3", "--functions", "3", "--cold-runs", "3")),
    Step("throughput", ("--duration", "10"), ("--duration", "1"), repeated=True),
    Step("redeploy", (), ("--clients", "4", "--redeploys", "1")),
    Step("reload", (), ("--edits", "2",)),
    Step("images", ("--cold-cache",), ("--runs", "1", "--imports", "2")),
    Step("http_gateway", (), ("--size-gib", "0.05", "--chunks", "20", "--round-trips", "200")),
    Step("many_apps", (), ("--apps", "20", "--big", "20", "--rounds", "2", "--seconds", "2", "--deploys", "1", "--lists", "2")),
    Step("heavy_imports", (), ("--cold-runs", "3",)),
    Step("gateway_workers", (), ("--seconds", "2", "--rounds", "1")),
)
NAMES = tuple(step.name for step in STEPS)
TIMEOUT = {False: 900.0, True: 300.0}  # seconds per script run, full / quick


def command_line() -> str:
    """This command as typed, with the interpreter relative to the current folder when inside it."""
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    return " ".join([python, *(["-P"] if sys.flags.safe_path else []), *sys.argv])


def processes() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (parent pid, state, environment) of every live process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            table[int(entry.name)] = (int(fields[1]), fields[0], (entry / "environ").read_bytes())
        except (OSError, ValueError, IndexError):
            continue
    return {pid: info for pid, info in table.items() if info[1] != "Z"}


def leftovers(tag: str) -> list[int]:
    """Processes a finished script left running: those that inherited its tag, and their descendants."""
    table = processes()
    marker = f"{TAG}={tag}".encode()
    found = {pid for pid, (_, _, environ) in table.items() if marker in environ.split(b"\0")}
    grew = True
    while grew:  # containers and zygotes may get an environment of their own: follow parent links too
        more = {pid for pid, (parent, _, _) in table.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def stop_leftovers(tag: str) -> list[str]:
    """Stop what a script left behind (a server stuck in shutdown would skew the next benchmark)."""
    deadline = time.monotonic() + LEFTOVER_GRACE  # a server may still be finishing its shutdown
    while (pids := leftovers(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            described.append(f"{pid} {command.strip()[:120]}")
            os.kill(pid, signal.SIGTERM)
        except OSError:
            continue
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [pid for pid in pids if pid in processes()]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return described


def run_script(path: Path, args: list[str], log: Path, timeout: float) -> int:
    """Run one script, its output to log. On timeout, Ctrl-C first: the script's finally stops its server."""
    with log.open("w") as out:
        # -P: a script here named like a stdlib module must not shadow it for the others.
        # The tag marks every process the script starts, to find any it leaves behind.
        env = {**os.environ, TAG: str(log)}
        proc = subprocess.Popen([sys.executable, "-P", str(path), *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            out.write(f"\nrun_all: no exit after {timeout:.0f} s, interrupting\n")
            out.flush()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return -1


def run_steps(steps: list[Step], out: Path, quick: bool, repeat: int) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Run the steps: per step "ok" or what went wrong, and per script run the processes it left running."""
    outcome = {}
    left: dict[str, list[str]] = {}
    for step in steps:
        runs = repeat if step.repeated else 1
        problems = []
        for i in range(runs):
            stem = f"{step.name}-{i + 1}" if step.repeated else step.name
            started = time.monotonic()
            code = run_script(HERE / f"{step.name}.py", [*(step.quick if quick else step.full), "--json",
                              str(out / f"{stem}.json")], out / f"{stem}.log", TIMEOUT[quick])
            took = time.monotonic() - started
            print(f"{stem}: exit {code}, {took:.0f} s (log: {out / f'{stem}.log'})", file=sys.stderr, flush=True)
            if code:
                problems.append(f"{stem} exited {code}" if code > 0 else f"{stem} timed out")
            stopped = stop_leftovers(str(out / f"{stem}.log"))
            if stopped:
                left[stem] = stopped
                print(f"{stem}: stopped {len(stopped)} processes it left running: {stopped}", file=sys.stderr)
        outcome[step.name] = "; ".join(problems) or "ok"
    return outcome, left


def load_results(out: Path) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    for name in NAMES:
        paths = sorted(out.glob(f"{name}.json")) + sorted(out.glob(f"{name}-*.json"),
                                                             key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        results[name] = [json.loads(p.read_text()) for p in paths]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short durations and few repeats, to check the machinery")
    parser.add_argument("--repeat", type=int, help="runs of throughput.py (default 3; 2 with --quick)")
    parser.add_argument("--skip", action="append", default=[], choices=NAMES)
    parser.add_argument("--only", action="append", default=[], choices=NAMES)
    parser.add_argument("--out", type=Path, help="folder for the results and logs (default: a new temporary one)")
    parser.add_argument("--from", dest="source", type=Path, metavar="DIR",
                        help="run nothing: print the table of the run saved in DIR")
    parser.add_argument("--write", action="store_true",
                        help=f"replace the section between {_table.BEGIN} and {_table.END} in BENCHMARKS.md")
    args = parser.parse_args()
    if args.write and args.quick:
        parser.error("--write records full runs only: a --quick run is too short to stand in BENCHMARKS.md")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")

    if args.source:
        out = args.source
        meta = json.loads((out / "run.json").read_text())
        if args.write and (meta["quick"] or any(v != "ok" for v in meta["outcome"].values())):
            parser.error(f"{out} holds a --quick run or one with failures; --write wants a full, clean run")
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="wisp-bench-run-"))
        out.mkdir(parents=True, exist_ok=True)
        steps = [s for s in STEPS if s.name not in args.skip and (not args.only or s.name in args.only)]
        repeat = args.repeat or (2 if args.quick else 3)
        meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": command_line(), "cores": os.cpu_count(),
                "load_start": list(os.getloadavg()), "python": platform.python_version(),
                "machine": f"{platform.system()} {platform.machine()}", "quick": args.quick, "repeat": repeat,
                "steps": [s.name for s in steps]}
        print(f"wisp benchmarks: {', '.join(meta['steps'])}; results and logs in {out}", file=sys.stderr, flush=True)
        began = time.monotonic()
        meta["outcome"], meta["leftovers"] = run_steps(steps, out, args.quick, repeat)
        meta["load_end"] = list(os.getloadavg())
        meta["seconds"] = time.monotonic() - began
        (out / "run.json").write_text(json.dumps(meta, indent=1) + "\n")

    results = load_results(out)
    section = _table.section(meta, _table.rows(_table.SPECS, results), results)
    print(section)
    failed = {k: v for k, v in meta["outcome"].items() if v != "ok"}
    if args.write:
        if failed:
            sys.exit(f"not writing {BENCHMARKS_MD.name}: some benchmarks failed ({failed}); logs in {out}")
        BENCHMARKS_MD.write_text(_table.replace_section(BENCHMARKS_MD.read_text(), section))
        print(f"\nwrote the table to {BENCHMARKS_MD}", file=sys.stderr)
    if failed:
        sys.exit(f"failed: {'; '.join(failed.values())} (logs in {out})")


if __name__ == "__main__":
    main()

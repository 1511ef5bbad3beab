"""What an open dashboard costs the gateway: CPU per proxied request of the wisp server, with
no dashboard open and with one open (its live stream and its panel's polling), in one run.

    .venv/bin/python -P benchmarks/dashboard_cost.py [--duration 8] [--rounds 3] [--json PATH]

The endpoint and the load are benchmarks/throughput.py's (FastAPI hello, @wisp.concurrent,
`wrk -t2 -c64`), so the figures compare with its "proxy CPU per request" row; rounds alternate
closed and open. Needs wrk.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port
from throughput import LABEL, WISP_SCRIPT, cpu_seconds, wait_ready, wisp_cli, wrk


class OpenDashboard:
    """A dashboard page's traffic: the live stream, and the panel's history poll every 2 s."""

    def __init__(self, env: dict[str, str]) -> None:
        link = subprocess.run([sys.executable, "-m", "wisp.cli", "dashboard"], env=env, capture_output=True,
                              text=True, check=True).stdout.splitlines()[0]
        self.root = link.split("/dashboard/", 1)[0]
        self.session = requests.Session()
        self.session.get(link, timeout=30).raise_for_status()
        self.stop = threading.Event()
        self.events = 0
        self.threads = [threading.Thread(target=self._stream, daemon=True),
                        threading.Thread(target=self._poll, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _stream(self) -> None:
        with self.session.get(self.root + "/dashboard/api/events", stream=True, timeout=60) as answer:
            for line in answer.iter_lines():
                if self.stop.is_set():
                    return
                self.events += line.startswith(b"data: ")

    def _poll(self) -> None:
        while not self.stop.wait(2.0):
            self.session.get(f"{self.root}/dashboard/api/apps/bench-tput/history", timeout=30)

    def close(self) -> None:
        self.stop.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="wisp-bench-dash-")
    (Path(home) / "bench_tput.py").write_text(WISP_SCRIPT)
    port = free_port()
    env = {**os.environ, "WISP_HOME": home, "WISP_PORT": str(port)}
    wisp_cli(env, "server", "start")
    samples: dict[str, list[float]] = {"closed": [], "open": []}
    rps: dict[str, list[float]] = {"closed": [], "open": []}
    try:
        pid = json.loads((Path(home) / "server.json").read_text())["pid"]
        wisp_cli(env, "deploy", str(Path(home) / "bench_tput.py"))
        url = f"http://127.0.0.1:{port}/{LABEL}/"
        wait_ready(port, f"/{LABEL}/")
        wrk(url, args.connections, 2)  # warm up
        for _ in range(args.rounds):
            for side in ("closed", "open"):
                page = OpenDashboard(env) if side == "open" else None
                time.sleep(0.5)
                before = cpu_seconds([pid])
                run = wrk(url, args.connections, args.duration)
                samples[side].append((cpu_seconds([pid]) - before) * 1e6 / run["requests"])
                rps[side].append(run["rps"])
                if page is not None:
                    page.close()
                    assert page.events > 0, "the dashboard's stream sent nothing"
    finally:
        wisp_cli(env, "server", "stop")
    print(f"wisp server CPU per proxied request, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
          f"{args.rounds} rounds of {args.duration} s, wrk -c{args.connections}")
    print("| dashboard | µs/request median | runs | req/s median |")
    print("|---|---|---|---|")
    for side in ("closed", "open"):
        print(f"| {side} | {statistics.median(samples[side]):.1f} | "
              f"{', '.join(f'{s:.1f}' for s in samples[side])} | {statistics.median(rps[side]):.0f} |")
    _results.write(args.json, "dashboard_cost", {f"cpu_us.{k}": ("µs", v) for k, v in samples.items()},
                   {"duration": args.duration, "rounds": args.rounds})


if __name__ == "__main__":
    main()

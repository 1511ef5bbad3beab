"""The same endpoint deployed by Modal's own client (`modal deploy`) and by `wisp deploy`, on one
wisp server in the same run: cold start, warm latency, and the deploy command's wall time. A Modal
app's containers run Modal's own entrypoint, forked from the image's zygote (the default); the
third column is the same on a second server with `--runtime local`, where each container is a
fresh `python -m modal._container_entrypoint` (the cost the zygote takes away).

    .venv/bin/python -P benchmarks/modal_client.py [--cold-runs 10] [--warm-requests 500] [--json PATH]

Needs the `modal` extra (scripts/install installs it). Cold = a fresh deploy with no container
-> the first full response; warm = one keep-alive connection, sequential requests.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from _machine import free_port
from cold_warm import get, ms, warm, wisp_cli

REPO = Path(__file__).resolve().parents[1]
MODAL_APP = """
import modal

app = modal.App("modal-square")


@app.function()
@modal.fastapi_endpoint()
def square(x: int):
    return {"square": x**2}
"""
MODAL = Path(sys.executable).parent / "modal"


def modal_env(env: dict[str, str], home: Path) -> dict[str, str]:
    exports = subprocess.run([sys.executable, "-m", "wisp.cli", "modal", "env"], env=env, capture_output=True,
                             text=True, check=True).stdout
    values = dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
    clean = {k: v for k, v in env.items() if not k.startswith("MODAL_")}
    return {**clean, **values, "HOME": str(home), "MODAL_CONFIG_PATH": str(home / ".modal.toml")}


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return took


def measure(cold_runs: int, warm_requests: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for runtime, sides in (("auto", ("wisp", "modal")), ("local", ("fresh",))):
        home = Path(tempfile.mkdtemp(prefix="wisp-bench-modal-"))
        port = free_port()
        env = {**os.environ, "WISP_HOME": str(home), "WISP_PORT": str(port), "WISP_MODAL_PORT": str(free_port()),
               "WISP_RUNTIME": runtime}
        wisp_cli(env, "server", "start")
        folder = home / "modal-app"
        folder.mkdir()
        (folder / "square.py").write_text(MODAL_APP)
        client = modal_env(env, home)
        modal = ([str(MODAL), "deploy", "square.py"], "modal-square", "/modal-square--square/?x=42")
        commands = {
            "wisp": ([sys.executable, "-m", "wisp.cli", "deploy", str(REPO / "examples" / "webhook_get.py")],
                     "webhook_get", "/webhook-get--square/?x=42"),
            "modal": modal, "fresh": modal,
        }
        try:
            for side in sides:
                deploy, app, path = commands[side]
                cold, deploys = [], []
                for i in range(cold_runs):
                    if i:
                        wisp_cli(env, "app", "stop", app)  # the next deploy starts with no container
                    deploys.append(timed(deploy, client, cwd=folder))
                    cold.append(get(port, path))
                out[f"cold.{side}"], out[f"deploy.{side}"] = cold, deploys
                out[f"warm.{side}"] = warm(port, path, warm_requests)
        finally:
            wisp_cli(env, "server", "stop")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--warm-requests", type=int, default=500)
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    samples = measure(args.cold_runs, args.warm_requests)
    print(f"square endpoint, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {args.cold_runs} cold runs, "
          f"{args.warm_requests} warm requests")
    print("| measure | `modal deploy` p50 ms | p99 ms | `wisp deploy` p50 ms | p99 ms "
          "| `modal deploy`, `--runtime local` p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for key, name in (("cold", "cold start (no container -> response)"), ("warm", "warm request (keep-alive)"),
                      ("deploy", "deploy command, wall time")):
        m, w, f = samples[f"{key}.modal"], samples[f"{key}.wisp"], samples[f"{key}.fresh"]
        print(f"| {name} | {ms(m, .5)} | {ms(m, .99)} | {ms(w, .5)} | {ms(w, .99)} | {ms(f, .5)} | {ms(f, .99)} |")
    _results.write(args.json, "modal_client", {k: ("ms", [s * 1000 for s in v]) for k, v in samples.items()},
                   {"cold_runs": args.cold_runs, "warm_requests": args.warm_requests})


if __name__ == "__main__":
    main()

"""What each zygote step buys in a forked container's private memory (the profile behind memory.py).

    .venv/bin/python -P benchmarks/memory_steps.py

In this process: preload what an image zygote preloads, then fork a container that serves the
square webhook on a Unix socket, send it 20 requests, let it idle 0.5 s and read its
/proc/PID/smaps_rollup. Once per step, each step adding one thing the zygotes do before forking:
1. preload only: the child imports the script and builds the app (the zygote of session 1);
2. + gc.freeze() before the fork;
3. + a warm-up request through a throwaway webhook (the image zygote's `warm_up`);
4. + the script imported and its app built before the fork (the function zygote).
"""
from __future__ import annotations

import argparse
import gc
import http.client
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
from _machine import rollup

SCRIPT = '''
import wisp

stub = wisp.Stub("memory-steps")


@stub.webhook
def square(x: int = 2):
    return {"square": x**2}
'''
STEPS = ("preload only", "+ gc.freeze", "+ warm-up request", "+ script and app loaded before the fork")


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("container")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)



def measure(step: int, folder: Path) -> tuple[float, float]:
    """Fork from a child of ours set up as `step` says, so every step starts from a clean process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        with os.fdopen(read) as answer:
            pss, private = answer.read().split()
        os.waitpid(pid, 0)
        return float(pss), float(private)
    os.close(read)
    from wisp._protocol import Start
    from wisp._runtime import zygote
    from wisp._runtime.__main__ import load, main, serve

    zygote.preload()
    start = Start(directory=str(folder), module="steps_app", stub="stub", function="square")
    loaded = None
    if step >= 2:
        zygote.warm_up()
    if step >= 3:
        loaded = load(start)
    gc.collect()
    if step >= 1:
        gc.freeze()
    sock = str(folder / f"s{step}.sock")
    child = os.fork()
    if child == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the ready marker
        container = start.for_container(sock)
        if loaded is None:
            main(["--start", container.to_arg()])
        else:
            serve(loaded, container)
        os._exit(0)
    deadline = time.monotonic() + 30
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    for _ in range(20):
        conn = UnixConnection(sock)
        conn.request("GET", "/?x=3")
        conn.getresponse().read()
        conn.close()
    time.sleep(0.5)
    pss, private = rollup(child)
    os.kill(child, 15)
    os.waitpid(child, 0)
    os.write(write, f"{pss} {private}".encode())
    os._exit(0)


def main_() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    folder = Path(tempfile.mkdtemp(prefix="wisp-mem-steps-"))
    (folder / "steps_app.py").write_text(SCRIPT)
    sys.path.insert(0, str(folder))
    print(f"forked container after 20 requests, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print("| step | PSS MB | private MB |")
    print("|---|---|---|")
    for step, name in enumerate(STEPS):
        pss, private = measure(step, folder)
        print(f"| {step + 1}. {name} | {pss:.1f} | {private:.1f} |", flush=True)


if __name__ == "__main__":
    main_()

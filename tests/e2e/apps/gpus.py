"""GPU functions for a machine whose inventory is faked at the discovery boundary (2 x T4):
`t4` takes one T4 per container, `both` two, `a100` and the called `h100` ask for GPUs it does not have,
`plain` asks for none."""
import os
import time

import wisp

stub = wisp.Stub("gpus")


def container_id(pid: int | None = None) -> str:
    """A process of this container (itself, by default) named by its pid namespace's inode, its
    pid there and its start time: unique under every runtime (each sandboxed container is pid 1
    of a namespace of its own, whose inode is reused once it is gone); `host_pid` in the tests
    finds it."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat") as stat:
        started = stat.read().rsplit(")", 1)[1].split()[19]
    return f"{os.readlink('/proc/self/ns/pid')[5:-1]}:{pid}:{started}"


def seen() -> dict[str, object]:
    return {"pid": container_id(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "order": os.environ.get("CUDA_DEVICE_ORDER")}


@stub.webhook(gpu="t4", container_idle_timeout=2)
def t4(seconds: float = 0.0):
    time.sleep(seconds)
    return seen()


@stub.webhook(gpu="T4:2", container_idle_timeout=60)  # holds both T4s, idle, for a minute
def both():
    return seen()


@stub.webhook(gpu="A100", keep_warm=1)  # a warm pool it can never start: the deploy succeeds all the same
def a100():
    return seen()


@stub.function(gpu=["H100", "A100:2"])
def h100():
    return seen()


@stub.webhook()
def plain():
    return seen()

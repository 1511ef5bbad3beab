"""Reservations that fill a machine of WISP_CPU_LIMIT=1: two containers of `half` (or of `hold`,
which keeps them for a minute), none of `huge`."""
import asyncio
import os
import time

import wisp

stub = wisp.Stub("capacity")


def container_id(pid: int | None = None) -> str:
    """A process of this container (itself, by default) named by its pid namespace's inode, its
    pid there and its start time: unique under every runtime (each sandboxed container is pid 1
    of a namespace of its own, whose inode is reused once it is gone); `host_pid` in the tests
    finds it."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat") as stat:
        started = stat.read().rsplit(")", 1)[1].split()[19]
    return f"{os.readlink('/proc/self/ns/pid')[5:-1]}:{pid}:{started}"


@stub.webhook(cpu=0.5, container_idle_timeout=2)
def half(seconds: float = 1.0):
    time.sleep(seconds)
    return {"pid": container_id()}


@stub.webhook(cpu=0.5, container_idle_timeout=60)
def hold(seconds: float = 0.5):
    time.sleep(seconds)
    return {"pid": container_id()}


@stub.webhook(cpu=0.5, container_idle_timeout=60)
def other():
    return {"pid": container_id()}


@stub.webhook(cpu=4)
def huge():
    return {"never": "served"}


running = 0


@stub.webhook(cpu=0.5, container_idle_timeout=2)
async def quick():
    """Short requests on a full machine: the pool hands a busy container one more, which waits."""
    global running
    running += 1
    try:
        seen = running
        await asyncio.sleep(0.005)
        return {"pid": container_id(), "running": seen}
    finally:
        running -= 1


@stub.webhook
def nested(x: int = 6):
    """A plain `def` runs on the serving thread, yet sees no running event loop."""
    return {"value": asyncio.run(asyncio.sleep(0, result=x * 7))}

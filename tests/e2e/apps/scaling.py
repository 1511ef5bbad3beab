"""Functions the autoscaling tests drive."""
import os
import time

import wisp

stub = wisp.Stub("scaling")
VERSION = 1


def container_id(pid: int | None = None) -> str:
    """A process of this container (itself, by default) named by its pid namespace's inode, its
    pid there and its start time: unique under every runtime (each sandboxed container is pid 1
    of a namespace of its own, whose inode is reused once it is gone); `host_pid` in the tests
    finds it."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat") as stat:
        started = stat.read().rsplit(")", 1)[1].split()[19]
    return f"{os.readlink('/proc/self/ns/pid')[5:-1]}:{pid}:{started}"


# A small reservation: 32 containers fit this machine's cores (the capacity rule), so the burst
# shows the autoscaler's own scaling.
@stub.webhook(container_idle_timeout=30, cpu=0.01)
def burst(seconds: float = 1.0):
    time.sleep(seconds)
    return {"pid": container_id()}


@stub.webhook(container_idle_timeout=2)
def work(seconds: float = 0.05):
    time.sleep(seconds)
    return {"pid": container_id(), "version": VERSION}


@stub.webhook(keep_warm=True, container_idle_timeout=2)
def warm():
    return {"pid": container_id()}


@stub.function(container_idle_timeout=10)
@wisp.concurrent(max_inputs=4)
@wisp.fastapi_endpoint()
async def shared(seconds: float = 1.0):
    import asyncio

    await asyncio.sleep(seconds)
    return {"pid": container_id()}


@stub.webhook(concurrency_limit=1)
def single(seconds: float = 2.0):
    time.sleep(seconds)
    return {"pid": container_id()}


@stub.asgi
def never_starts():
    raise RuntimeError("this factory always fails")


@stub.cls(startup_timeout=2)
class Sleepy:
    @wisp.enter()
    def load(self):
        time.sleep(60)

    @wisp.fastapi_endpoint()
    def hello(self):
        return {"never": "reached"}

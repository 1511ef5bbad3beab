"""Containers of three kinds for the process fault tests: forked, fresh (fork=False), and one
that starts a process of its own (it stays in the container's process group)."""
import os
import subprocess
import time

import wisp

stub = wisp.Stub("procs")
CHILD: list[subprocess.Popen] = []


def container_id(pid: int | None = None) -> str:
    """A process of this container (itself, by default) named by its pid namespace's inode, its
    pid there and its start time: unique under every runtime (each sandboxed container is pid 1
    of a namespace of its own, whose inode is reused once it is gone); `host_pid` in the tests
    finds it."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat") as stat:
        started = stat.read().rsplit(")", 1)[1].split()[19]
    return f"{os.readlink('/proc/self/ns/pid')[5:-1]}:{pid}:{started}"


@stub.webhook(keep_warm=2)
def hello(hold: float = 0.0):
    time.sleep(hold)
    return {"pid": container_id()}


@stub.webhook(fork=False, keep_warm=1)
def fresh(hold: float = 0.0):
    time.sleep(hold)
    return {"pid": container_id()}


@stub.webhook
def spawner():
    if not CHILD:
        CHILD.append(subprocess.Popen(["sleep", "600"]))
    return {"pid": container_id(), "child": container_id(CHILD[0].pid)}


@stub.webhook
def detacher():
    """Starts a process that leaves the container's group and session but keeps its output."""
    if not CHILD:
        CHILD.append(subprocess.Popen(["sleep", "600"], start_new_session=True))
    return {"pid": container_id(), "child": container_id(CHILD[0].pid)}

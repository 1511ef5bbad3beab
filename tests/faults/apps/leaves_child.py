"""A container that starts a child of its own, answers, and dies: the child must not outlive it."""
import os
import subprocess
import threading

import wisp

stub = wisp.Stub("leaves-child")


def container_id(pid: int | None = None) -> str:
    """A process of this container (itself, by default) named by its pid namespace's inode, its
    pid there and its start time: unique under every runtime (each sandboxed container is pid 1
    of a namespace of its own, whose inode is reused once it is gone); `host_pid` in the tests
    finds it."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat") as stat:
        started = stat.read().rsplit(")", 1)[1].split()[19]
    return f"{os.readlink('/proc/self/ns/pid')[5:-1]}:{pid}:{started}"


@stub.webhook
def once():
    child = subprocess.Popen(["sleep", "300"])
    threading.Timer(0.05, os._exit, (3,)).start()
    return {"pid": container_id(), "child": container_id(child.pid)}

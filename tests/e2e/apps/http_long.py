"""Long calls for the redirect chain (issue 5, point 1). The tests run the server with a 2 s
window, and read what `record` prints in the app's log."""
import os
import time

import wisp

stub = wisp.Stub("http-long")


def container_id(pid: int | None = None) -> str:
    """A process of this container (itself, by default) named by its pid namespace's inode, its
    pid there and its start time: unique under every runtime (each sandboxed container is pid 1
    of a namespace of its own, whose inode is reused once it is gone); `host_pid` in the tests
    finds it."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat") as stat:
        started = stat.read().rsplit(")", 1)[1].split()[19]
    return f"{os.readlink('/proc/self/ns/pid')[5:-1]}:{pid}:{started}"


def record(line: str) -> None:
    print(f"[event] {line}", flush=True)


@stub.webhook
def slow(seconds: float = 5.0, tag: str = ""):
    record(f"slow {tag} started")
    time.sleep(seconds)
    return {"slept": seconds, "tag": tag, "pid": container_id()}


@stub.function(timeout=4)
@wisp.asgi_app()
def capped():
    """Never answers; past its 4 s timeout the caller gets 504 and this app sees the disconnect."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                record("capped saw http.disconnect")
                return

    return app

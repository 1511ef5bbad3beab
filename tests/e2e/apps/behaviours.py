"""Functions the end-to-end tests use to see inside containers."""
import os
import time

from fastapi import Request

import wisp

stub = wisp.Stub("behaviours")


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
def pid():
    return {"pid": container_id(), "cwd": os.getcwd()}


@stub.webhook
def slow(seconds: float = 1.0):
    time.sleep(seconds)
    return {"pid": container_id(), "slept": seconds}


@stub.webhook
def boom():
    raise ValueError("secret detail that must stay in the logs")


@stub.webhook
def die(exit: bool = True):
    if exit:
        print(f"about to die: {container_id()}", flush=True)
        os._exit(3)
    return {"pid": container_id()}


@stub.webhook(method="POST")
async def size(request: Request):
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return {"bytes": total}


@stub.webhook(container_idle_timeout=2)
def short_lived():
    return {"pid": container_id()}


@stub.webhook(keep_warm=3)
def warm():
    return {"pid": container_id()}


@stub.webhook
async def root(request: Request):
    return {"root_path": request.scope.get("root_path"), "url": str(request.url), "host": request.headers["host"]}


@stub.asgi
def broken_factory():
    raise RuntimeError("factory broke inside the container")


@stub.wsgi(image=wisp.Image.debian_slim().pip_install("flask"))
def flask_links():
    from flask import Flask, request, url_for

    app = Flask(__name__)

    @app.get("/page")
    def page():
        return {"script_root": request.script_root, "path": request.path, "link": url_for("page")}

    return app

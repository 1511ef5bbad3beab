"""Classes with enter/exit hooks (issue 3, point 4). Each hook prints an event line, which the test
reads in the app's logs."""
import os
import time

import wisp

stub = wisp.Stub("lifecycle")


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


@stub.cls(container_idle_timeout=60)
class Model:
    @wisp.enter()
    def load(self):
        self.loaded_at = time.time()
        self.order = ["load"]
        record(f"enter Model {container_id()}")

    @wisp.enter()
    async def connect(self):
        self.order.append("connect")

    @wisp.exit()
    def close(self):
        record(f"exit Model {container_id()}")

    @wisp.fastapi_endpoint()
    def state(self, x: int = 1):
        return {"loaded_at": self.loaded_at, "served_at": time.time(), "order": self.order, "pid": container_id(), "x": x}

    @wisp.asgi_app()
    def api(self):
        from fastapi import FastAPI

        app = FastAPI()

        @app.get("/order")
        def order():
            return {"order": self.order, "pid": container_id()}

        return app


class Seed:
    def __enter__(self):
        self.weights = 3
        record(f"enter Seed {container_id()}")

    def __exit__(self, *exc):
        record(f"exit Seed {container_id()} {exc}")

    @stub.webhook
    def predict(self, x: int):
        return {"y": self.weights * x, "pid": container_id()}


@stub.cls()
class Broken:
    @wisp.enter()
    def load(self):
        raise RuntimeError("model weights not found in /models")

    @wisp.fastapi_endpoint()
    def web(self):
        return "never served"

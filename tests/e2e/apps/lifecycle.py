"""Classes with enter/exit hooks (issue 3, point 4). Each hook appends a line to EVENTS, which the
test replaces with a path of its own when it copies this script."""
import os
import time

import wisp

stub = wisp.Stub("lifecycle")
EVENTS = "/tmp/wisp-lifecycle-events.txt"


def record(line: str) -> None:
    with open(EVENTS, "a") as f:
        f.write(f"{line}\n")


@stub.cls(container_idle_timeout=60)
class Model:
    @wisp.enter()
    def load(self):
        self.loaded_at = time.time()
        self.order = ["load"]
        record(f"enter Model {os.getpid()}")

    @wisp.enter()
    async def connect(self):
        self.order.append("connect")

    @wisp.exit()
    def close(self):
        record(f"exit Model {os.getpid()}")

    @wisp.fastapi_endpoint()
    def state(self, x: int = 1):
        return {"loaded_at": self.loaded_at, "served_at": time.time(), "order": self.order, "pid": os.getpid(), "x": x}

    @wisp.asgi_app()
    def api(self):
        from fastapi import FastAPI

        app = FastAPI()

        @app.get("/order")
        def order():
            return {"order": self.order, "pid": os.getpid()}

        return app


class Seed:
    def __enter__(self):
        self.weights = 3
        record(f"enter Seed {os.getpid()}")

    def __exit__(self, *exc):
        record(f"exit Seed {os.getpid()} {exc}")

    @stub.webhook
    def predict(self, x: int):
        return {"y": self.weights * x, "pid": os.getpid()}


@stub.cls()
class Broken:
    @wisp.enter()
    def load(self):
        raise RuntimeError("model weights not found in /models")

    @wisp.fastapi_endpoint()
    def web(self):
        return "never served"

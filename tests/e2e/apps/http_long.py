"""Long calls for the redirect chain (issue 5, point 1). The tests run the server with a 2 s
window and replace EVENTS with a path of their own."""
import os
import time

import wisp

stub = wisp.Stub("http-long")
EVENTS = "/tmp/wisp-http-long-events.txt"


def record(line: str) -> None:
    with open(EVENTS, "a") as f:
        f.write(f"{line}\n")


@stub.webhook
def slow(seconds: float = 5.0, tag: str = ""):
    record(f"slow {tag} started")
    time.sleep(seconds)
    return {"slept": seconds, "tag": tag, "pid": os.getpid()}


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

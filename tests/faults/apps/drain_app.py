"""A slow endpoint, a WebSocket echo and an exit hook, for the SIGTERM tests (issue 11, point 3).

The test names a folder in DRAIN_DIR, passed as an inline secret from the environment of
`wisp deploy`: every request appends a line to DRAIN_DIR/started.txt when it starts, and the
exit hook writes DRAIN_DIR/exit-<pid>.txt.
"""
import asyncio
import os

import wisp

stub = wisp.Stub("drain")


def note(name: str, line: str) -> None:
    with open(os.path.join(os.environ["DRAIN_DIR"], name), "a") as f:
        f.write(line + "\n")


@stub.cls(secrets=[wisp.Secret.from_local_environ(["DRAIN_DIR"])], allow_concurrent_inputs=64,
          container_idle_timeout=600)
class Drain:
    @wisp.exit()
    def finish(self):
        note(f"exit-{os.getpid()}.txt", "exit hook ran")

    @wisp.asgi_app()
    def api(self):
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route, WebSocketRoute

        async def sleep(request):
            seconds = float(request.query_params.get("seconds", "0"))
            tag = request.query_params.get("tag", "-")
            note("started.txt", tag)
            await asyncio.sleep(seconds)
            return PlainTextResponse(f"slept {seconds} {tag}")

        async def echo(ws):
            await ws.accept()
            await ws.send_text("ready")
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await asyncio.sleep(0.5)  # an exchange that takes a while
                await ws.send_text("echo:" + message.get("text", ""))

        return Starlette(routes=[Route("/sleep", sleep), WebSocketRoute("/ws", echo)])

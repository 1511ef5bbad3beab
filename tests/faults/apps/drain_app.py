"""A slow endpoint, a WebSocket echo and an exit hook, for the SIGTERM tests (issue 11, point 3).

Every request prints `[drain] started TAG` when it starts, and the exit hook `[drain] exit hook
ran`: the test reads them in the app's log, as its user would.
"""
import asyncio

import wisp

stub = wisp.Stub("drain")


def note(line: str) -> None:
    print(f"[drain] {line}", flush=True)


@stub.cls(allow_concurrent_inputs=64, container_idle_timeout=600)
class Drain:
    @wisp.exit()
    def finish(self):
        note("exit hook ran")

    @wisp.asgi_app()
    def api(self):
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route, WebSocketRoute

        async def sleep(request):
            seconds = float(request.query_params.get("seconds", "0"))
            tag = request.query_params.get("tag", "-")
            note(f"started {tag}")
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

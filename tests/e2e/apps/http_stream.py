"""Streaming responses (issue 5, point 2): each chunk carries the container's monotonic clock
when it was sent, so the tests can tell when it arrived relative to the next one."""
import asyncio
import time

from fastapi.responses import StreamingResponse

import wisp

stub = wisp.Stub("http-stream")
GAP = 0.5  # seconds between chunks


@stub.webhook
async def ticks(n: int = 4):
    async def chunks():
        for i in range(n):
            yield f"tick {i} {time.monotonic():.6f}\n"
            await asyncio.sleep(GAP)
    return StreamingResponse(chunks(), media_type="text/plain")


@stub.webhook
async def events(n: int = 4):
    async def chunks():
        for i in range(n):
            yield f"event: tick\ndata: tick {i} {time.monotonic():.6f}\n\n"
            await asyncio.sleep(GAP)
    return StreamingResponse(chunks(), media_type="text/event-stream")


@stub.wsgi(image=wisp.Image.debian_slim().pip_install("flask"))
def flask_ticks():
    from flask import Flask, Response

    app = Flask(__name__)

    @app.get("/")
    def generate():
        def chunks():
            for i in range(4):
                yield f"tick {i} {time.monotonic():.6f}\n"
                time.sleep(GAP)
        return Response(chunks(), mimetype="text/plain")

    return app


@stub.asgi
def endless():
    """Streams until the client goes; records the http.disconnect it then receives."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})

        async def ticking():
            while True:
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.sleep(0.05)

        sender = asyncio.ensure_future(ticking())
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
            print("[event] endless saw http.disconnect", flush=True)
        finally:
            sender.cancel()

    return app

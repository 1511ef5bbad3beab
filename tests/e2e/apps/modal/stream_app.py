"""A Modal app for what crosses Modal's own container entrypoint on wisp: streaming responses,
large bodies both ways, WebSockets, and a call long enough for the redirect chain."""
import asyncio
import hashlib
import sys

import modal

image = modal.Image.debian_slim(python_version="3.11").pip_install("fastapi[standard]")
app = modal.App("modal-stream", image=image)
released = None  # an asyncio.Event, made in the container's loop


@app.function()
@modal.concurrent(max_inputs=20)
@modal.asgi_app()
def web():
    from fastapi import FastAPI, Request, WebSocket
    from fastapi.responses import Response, StreamingResponse

    api = FastAPI()

    @api.get("/runtime")
    def runtime():
        main = sys.modules["__main__"]
        return {"main": main.__spec__.name if main.__spec__ else None, "argv0": sys.argv[0],
                "modal": modal.__version__, "local": modal.is_local()}

    @api.get("/held")
    async def held():
        """One line at once, the rest only after /release: a buffered response never arrives."""
        global released
        released = asyncio.Event()

        async def lines():
            yield "first\n"
            await released.wait()
            yield "second\n"

        return StreamingResponse(lines(), media_type="text/plain")

    @api.post("/release")
    def release():
        released.set()
        return {"released": True}

    @api.post("/digest")
    async def digest(request: Request):
        body = await request.body()
        return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    @api.get("/big")
    def big(mb: int = 8):
        return Response(bytes(range(256)) * (mb * 4096), media_type="application/octet-stream")

    @api.get("/slow")
    async def slow(s: float = 3):
        await asyncio.sleep(s)
        return {"slept": s}

    @api.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        async for text in socket.iter_text():
            await socket.send_text(text.upper())

    return api

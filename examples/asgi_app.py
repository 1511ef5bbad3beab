# Seed: "Serving ASGI and WSGI apps" - an existing FastAPI app behind @stub.asgi.
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

import wisp

web_app = FastAPI()
stub = wisp.Stub()
image = wisp.Image.debian_slim().pip_install("boto3")


@web_app.post("/foo")
async def foo(request: Request):
    body = await request.json()
    return body


@web_app.get("/bar")
async def bar(arg="world"):
    return HTMLResponse(f"<h1>Hello Fast {arg}!</h1>")


@stub.asgi(image=image)
def fastapi_app():
    return web_app

"""Proxy auth, written in Modal's style: endpoints that take a proxy token, and one that is public."""
from fastapi import FastAPI, Request

import wisp as modal

app = modal.App("proxied")
image = modal.Image.debian_slim().pip_install("fastapi")


@app.function(image=image)
@modal.fastapi_endpoint(requires_proxy_auth=True)
def private() -> str:
    return "private"


@app.function(image=image)
@modal.asgi_app(requires_proxy_auth=True)
def headers():
    web = FastAPI()

    @web.get("/")
    def seen(request: Request) -> dict:
        return {"headers": sorted(request.headers.keys())}

    return web


@app.function(image=image)
@modal.fastapi_endpoint()
def public() -> str:
    return "public"

"""Bodies, framing and headers through real containers (issue 5, points 3 and 6)."""
import hashlib

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

import wisp

stub = wisp.Stub("http-bodies")
BLOCK = bytes(range(256)) * 256  # 64 KiB


@stub.webhook(method="POST")
async def sha(request: Request):
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


@stub.webhook
async def download(n: int):
    async def blocks():
        left = n
        while left > 0:
            yield BLOCK[: min(left, len(BLOCK))]
            left -= len(BLOCK)
    return StreamingResponse(blocks(), media_type="application/octet-stream")


@stub.asgi
def misc():
    app = FastAPI()

    @app.get("/empty", status_code=204)
    def empty():
        return Response(status_code=204)

    @app.get("/cached")
    def cached(request: Request):
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status_code=304, headers={"etag": '"v1"'})
        return Response(b"fresh", headers={"etag": '"v1"'})

    @app.api_route("/headers", methods=["GET", "HEAD", "POST"])
    async def headers(request: Request):
        return {"headers": [[k, v] for k, v in request.headers.items()], "body": (await request.body()).decode()}

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom for the request id test")

    return app

"""Build the ASGI app a container serves, and the thin wrappers every app gets."""
from __future__ import annotations

import asyncio
import functools
import inspect
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any, cast

from .._spec import FunctionSpec

ASGIApp = Callable[..., Any]
ROOT_PATH_HEADER = b"x-wisp-root-path"
REQUEST_ID_HEADER = b"x-wisp-request-id"  # set by the gateway on every request, and on its response


def webhook_app(fn: Callable[..., Any], spec: FunctionSpec) -> ASGIApp:
    """A webhook is a one-route FastAPI app: FastAPI does validation and responses (S1, S6)."""
    from fastapi import FastAPI

    assert spec.web is not None
    docs = spec.web.docs
    app = FastAPI(
        title=spec.name,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    if spec.allow_concurrent_inputs == 1:
        fn = on_serving_thread(fn)
    app.add_api_route("/", fn, methods=[spec.web.method])
    # Starlette re-raises after this handler answers, so with_errors still logs the traceback.
    app.add_exception_handler(Exception, _json_500)
    return app


def on_serving_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A plain `def` endpoint of a one-input container, run on the serving thread.

    FastAPI would hand it to a worker thread, so that other requests go on meanwhile; a container
    that takes one input at a time has none, and the hand-off cost about 130 µs of CPU per request
    (docs/profiling.md). While it runs, no event loop is running as far as it can tell, as in a
    worker thread: `asyncio.run()` inside it works. Coroutine and generator functions are left
    as they are (FastAPI awaits the one and streams the other).
    """
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        return fn

    @functools.wraps(fn)
    async def inline(*args: Any, **kwargs: Any) -> Any:
        loop = asyncio._get_running_loop()
        asyncio._set_running_loop(None)
        try:
            return fn(*args, **kwargs)
        finally:
            asyncio._set_running_loop(loop)

    return inline


def with_inputs(app: ASGIApp, limit: int) -> ASGIApp:
    """At most `limit` requests (a function's max_inputs) run in the app at once; more wait here.

    The pool hands a container of a function with short requests a few requests beyond its inputs
    while it cannot start more containers (autoscaler.standby_slots): they wait on this gate, so
    the container goes from one input to the next with no round trip through the gateway in
    between, and still never runs more than max_inputs at once.
    """
    gate = asyncio.Semaphore(limit)

    async def gated(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await app(scope, receive, send)
            return
        async with gate:
            await app(scope, receive, send)

    return gated


def error_body(exc: BaseException) -> bytes:
    return json.dumps(
        {
            "error": "internal_error",
            "message": f"The function raised {type(exc).__name__}. See the traceback with `wisp app logs`.",
        }
    ).encode()


async def _json_500(request: Any, exc: Exception) -> Any:
    from starlette.responses import Response

    return Response(error_body(exc), status_code=500, media_type="application/json")


def build_app(fn: Callable[..., Any], spec: FunctionSpec) -> ASGIApp:
    assert spec.web is not None
    if spec.web.kind == "webhook":
        return webhook_app(fn, spec)
    app = fn()  # the factory runs here, inside the container, with the image's packages
    if spec.web.kind == "wsgi":
        from a2wsgi import WSGIMiddleware

        return WSGIMiddleware(app)
    if not callable(app):
        raise TypeError(
            f"@stub.asgi function `{spec.name}` returned {app!r}, which is not an ASGI app. "
            "Return the app object, for example `return web_app` for a FastAPI() instance."
        )
    return cast(Callable[..., Any], app)


def with_root_path(app: ASGIApp) -> ASGIApp:
    """Apply the gateway's path prefix, so apps routed by path build correct links.

    The gateway forwards the full path (`/<label>/foo`) and names the prefix in a header; ASGI
    wants it in scope["root_path"] with the path still including it (as uvicorn does).
    """

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = rooted(scope)
        await app(scope, receive, send)

    return wrapped


def rooted(scope: dict[str, Any]) -> dict[str, Any]:
    """An HTTP or WebSocket scope with the gateway's path prefix as its root_path."""
    for name, value in scope["headers"]:
        if name == ROOT_PATH_HEADER:
            root = value.decode("latin-1")
            if root:
                path = scope["path"]
                if path == root:  # `/label` alone means the app's root
                    path = root + "/"
                return {**scope, "root_path": root, "path": path}
            break
    return scope


def with_errors(app: ASGIApp, function: str) -> ASGIApp:
    """A raising app gives the client a short JSON 500 and its traceback goes to the logs."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await app(scope, receive, tracking_send)
        except Exception as exc:
            request_id = next((v.decode("latin-1") for k, v in scope["headers"] if k == REQUEST_ID_HEADER), "-")
            print(f"Error in function `{function}` handling {scope.get('method')} {scope.get('path')} "
                  f"(request {request_id}):", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            if started:
                return  # answered already (FastAPI's handler), or half sent: uvicorn closes it
            body = error_body(exc)
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})

    return wrapped

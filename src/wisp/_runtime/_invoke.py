"""A called function's ASGI app: one POST per call, answered in frames (`wisp._call_wire`).

Any path is accepted (the gateway forwards `/<label>/`). Sync functions and sync generators run
on a thread pool as large as the container's `max_inputs`, so the serving loop stays free and
concurrent inputs really run at once; async ones run on the loop.
"""
from __future__ import annotations

import asyncio
import inspect
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._call_wire import CONTENT_TYPE, KIND_HEADER, decode_input, failure_frame, frame
from .._spec import FunctionSpec

ASGIApp = Callable[..., Any]
_HEADERS = [(b"content-type", CONTENT_TYPE.encode())]
_END = object()  # a sync generator's end, passed back from its thread


def invoke_app(fn: Callable[..., Any], spec: FunctionSpec) -> ASGIApp:
    executor: ThreadPoolExecutor | None = None
    is_gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)

    def pool() -> ThreadPoolExecutor:
        nonlocal executor
        if executor is None:  # made in the container, after any fork: threads never cross one
            executor = ThreadPoolExecutor(max_workers=spec.allow_concurrent_inputs, thread_name_prefix="wisp-input")
        return executor

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await _plain(send, 405, b"Called functions take POST requests from `f.remote()` and friends.\n")
            return
        kind = next((v.decode() for k, v in scope["headers"] if k == KIND_HEADER.encode()), "remote")
        body = await _read_body(receive)
        try:
            args, kwargs = decode_input(body)
        except Exception as exc:
            await _answer(send, failure_frame(exc, traceback.format_exc()))
            return
        if kind == "gen" and is_gen:
            await _stream(send, fn, args, kwargs, pool, spec.name)
        elif is_gen:
            error = TypeError(f"`{spec.name}` is a generator function: call it with `.remote_gen(...)` "
                              "(or `.map(...)` over its inputs), not `.remote(...)`.")
            await _answer(send, failure_frame(error, ""))
        else:
            await _answer(send, await _call(fn, args, kwargs, pool, spec.name))

    return app


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                pool: Callable[[], ThreadPoolExecutor], name: str) -> bytes:
    try:
        if inspect.iscoroutinefunction(fn):
            value = await fn(*args, **kwargs)
        else:
            value = await asyncio.get_running_loop().run_in_executor(pool(), lambda: fn(*args, **kwargs))
            if inspect.isawaitable(value):  # a sync wrapper around a coroutine
                value = await value
        return frame("ok", value)
    except Exception as exc:
        return _failed(exc, name)


async def _stream(send: Any, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  pool: Callable[[], ThreadPoolExecutor], name: str) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    try:
        if inspect.isasyncgenfunction(fn):
            async for item in fn(*args, **kwargs):
                await send({"type": "http.response.body", "body": frame("item", item), "more_body": True})
        else:
            loop = asyncio.get_running_loop()
            gen = await loop.run_in_executor(pool(), lambda: fn(*args, **kwargs))
            while (item := await loop.run_in_executor(pool(), next, gen, _END)) is not _END:
                await send({"type": "http.response.body", "body": frame("item", item), "more_body": True})
        last = frame("done", None)
    except Exception as exc:
        last = _failed(exc, name)
    await send({"type": "http.response.body", "body": last})


def _failed(exc: BaseException, name: str) -> bytes:
    text = traceback.format_exc()
    print(f"Error in function `{name}` (the caller gets it raised again):", file=sys.stderr)
    print(text, end="", file=sys.stderr, flush=True)
    return failure_frame(exc, text)


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Any, body: bytes) -> None:
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Any, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
    await send({"type": "http.response.body", "body": text})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

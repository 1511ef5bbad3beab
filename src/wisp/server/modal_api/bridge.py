"""HTTP on a Modal container's socket, as inputs to the container.

The gateway and the server's call path reach every container the same way: HTTP over the
container's Unix socket. A container running Modal's entrypoint serves no HTTP of its own; the
server listens on its socket instead (uvicorn's protocol classes, in the server's loop, with
this ASGI app), and turns each request into one of the container's inputs:

- a web function's request (HTTP or WebSocket) becomes an input: the scope (CBOR) as the input, the request's messages on the call's data-in channel as they arrive, and the
  response's messages, read from its data-out channel, sent back as they come (streaming);
- a called function's POST (`wisp._call_wire`) becomes an input of Modal's pickled arguments,
  and its result goes back as one of wisp's answer frames, still pickled: the server never
  unpickles what a container sends.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from modal_proto import api_pb2

from ..._call_wire import CONTENT_TYPE, pickled_failure_frame, pickled_frame
from . import asgi_wire
from .tasks import Call, ModalTask, TaskGone

Scope = dict[str, Any]
Receive = Any
Send = Any
FAILURE = api_pb2.GenericResult.GENERIC_STATUS_FAILURE
SUCCESS = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS


class Bridge:
    """The ASGI app on one Modal container's socket."""

    def __init__(self, task: ModalTask, web: bool) -> None:
        self.task = task
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        try:
            if self.web:
                await self._web(scope, receive, send)
            else:
                await self._called(receive, send)
        except TaskGone as exc:
            if scope["type"] == "http":
                await _plain(send, 502, f"The container exited before it answered: {exc}. See `wisp app logs`.")

    async def _web(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self.task.submit(asgi_wire.scope_input(scope), api_pb2.DATA_FORMAT_CBOR)
        pump = asyncio.ensure_future(_forward(receive, call))
        started = False
        try:
            while (message := await call.out.get()) is not None:
                started = started or message["type"] in ("http.response.start", "websocket.accept")
                await send(message)
            result = await call.result
            if result.status != SUCCESS and not started and scope["type"] == "http":
                self.task.log(f"[wisp] {result.exception}")
                await _plain(send, 500, "Internal Server Error")
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self.task.forget(call)

    async def _called(self, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        call = self.task.submit(bytes(body), api_pb2.DATA_FORMAT_PICKLE)
        try:
            while await call.out.get() is not None:
                pass  # a generator's items: Modal's client reads them from data-out, which wisp does not offer yet
            answer = _answer_frame(await call.result)
        finally:
            self.task.forget(call)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


def _answer_frame(result: api_pb2.GenericResult) -> bytes:
    """A Modal result as wisp's answer frame, its payload left pickled as the container made it."""
    if result.status == SUCCESS:
        return pickled_frame("ok", result.data)
    if result.data_blob_id:
        return pickled_failure_frame(result.exception, result.traceback, b"")
    return pickled_failure_frame(result.exception or "ExecutionError: the function failed", result.traceback,
                                 result.data)


async def _forward(receive: Receive, call: Call) -> None:
    """The client's messages onto the call's data-in channel, until it disconnects."""
    while not call.ended:
        message = await receive()
        call.push_in(asgi_wire.request_message(message))
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            return


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    with contextlib.suppress(Exception):  # the response may have begun, or the client gone
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def http_server_factory(app: Bridge) -> Any:
    """A protocol factory for `loop.create_unix_server`: uvicorn's HTTP (and WebSocket) protocol
    serving `app` in this loop, with no signal handlers, lifespan or logging setup of its own."""
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, proxy_headers=False,
                            ws_max_size=16 * 1024 * 1024)
    config.load()
    state = ServerState()
    protocol = config.http_protocol_class
    return lambda: protocol(config=config, server_state=state, app_state={})  # type: ignore[call-arg]  # the class chosen by config.load(), typed as its base

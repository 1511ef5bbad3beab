"""ASGI messages as Modal's `Asgi` protobuf, the way a web request crosses a function call.

A Modal web function is a function whose input is the request's ASGI scope (in CBOR), and whose
container then reads the request's messages from the call's data-in channel and
writes the response's messages to its data-out channel. The server makes the scope and the
request side's messages and reads the response side's; the container does the reverse. Pure,
table-tested (`tests/unit/test_modal_asgi_wire.py`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cbor2
from modal_proto import api_pb2

from ..._runtime._asgi import rooted

Message = dict[str, Any]


def _pairs(flat: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
    items = list(flat)
    return list(zip(items[0::2], items[1::2]))


def scope_input(scope: Message) -> bytes:
    """The function call's input: `((scope,), {})` in CBOR, data only (never a pickle), with the
    scope's plain fields (not the server's `app`, `state` or extensions) and the gateway's path
    prefix as its root_path, as wisp's agent gives it. Modal's container reads it as the arguments
    of its ASGI wrapper."""
    if scope["type"] not in ("http", "websocket"):
        raise ValueError(f"a {scope['type']!r} scope is not a web request")
    scope = rooted(scope)
    plain: Message = {
        "type": scope["type"], "asgi": {"version": "3.0", "spec_version": scope.get("asgi", {}).get("spec_version", "2.3")},
        "http_version": scope.get("http_version", "1.1"), "scheme": scope.get("scheme", "http"),
        "path": scope["path"], "raw_path": scope.get("raw_path") or scope["path"].encode(),
        "query_string": scope.get("query_string", b""), "root_path": scope.get("root_path", ""),
        "headers": [[bytes(k), bytes(v)] for k, v in scope.get("headers", ())],
    }
    if scope.get("client"):
        plain["client"] = [str(scope["client"][0]), int(scope["client"][1] or 0)]
    if scope["type"] == "http":
        plain["method"] = scope["method"]
    else:
        plain["subprotocols"] = list(scope.get("subprotocols", ()))
    return cbor2.dumps([[plain], {}])


def request_message(message: Message) -> api_pb2.Asgi:
    """A message the server's side receives from the client, for the container's data-in channel."""
    kind = message["type"]
    if kind == "http.request":
        return api_pb2.Asgi(http_request=api_pb2.Asgi.HttpRequest(
            body=message.get("body", b""), more_body=message.get("more_body", False)))
    if kind == "http.disconnect":
        return api_pb2.Asgi(http_disconnect=api_pb2.Asgi.HttpDisconnect())
    if kind == "websocket.connect":
        return api_pb2.Asgi(websocket_connect=api_pb2.Asgi.WebsocketConnect())
    if kind == "websocket.receive":
        if message.get("bytes") is not None:
            return api_pb2.Asgi(websocket_receive=api_pb2.Asgi.WebsocketReceive(bytes=message["bytes"]))
        return api_pb2.Asgi(websocket_receive=api_pb2.Asgi.WebsocketReceive(text=message.get("text") or ""))
    if kind == "websocket.disconnect":
        return api_pb2.Asgi(websocket_disconnect=api_pb2.Asgi.WebsocketDisconnect(code=message.get("code", 1000)))
    raise ValueError(f"the ASGI message {kind!r} does not go to a container")


def response_message(asgi: api_pb2.Asgi) -> Message:
    """A message the container's app sent, as the ASGI message to send to the client."""
    kind = asgi.WhichOneof("type")
    if kind == "http_response_start":
        start = asgi.http_response_start
        return {"type": "http.response.start", "status": start.status, "headers": _pairs(start.headers),
                "trailers": start.trailers}
    if kind == "http_response_body":
        return {"type": "http.response.body", "body": asgi.http_response_body.body,
                "more_body": asgi.http_response_body.more_body}
    if kind == "http_response_trailers":
        trailers = asgi.http_response_trailers
        return {"type": "http.response.trailers", "headers": _pairs(trailers.headers),
                "more_trailers": trailers.more_trailers}
    if kind == "websocket_accept":
        accept = asgi.websocket_accept
        return {"type": "websocket.accept", "subprotocol": accept.subprotocol if accept.HasField("subprotocol") else None,
                "headers": _pairs(accept.headers)}
    if kind == "websocket_send":
        send = asgi.websocket_send
        if send.HasField("bytes"):
            return {"type": "websocket.send", "bytes": send.bytes}
        return {"type": "websocket.send", "text": send.text}
    if kind == "websocket_close":
        return {"type": "websocket.close", "code": asgi.websocket_close.code or 1000,
                "reason": asgi.websocket_close.reason}
    raise ValueError(f"a container sent the ASGI message {kind!r}, which is not a response")

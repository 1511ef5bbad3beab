"""ASGI messages across a Modal web function's input and data channels (asgi_wire), a call's
data-out chunks in index order (tasks.Call), and a Modal result as wisp's answer frame (bridge)."""
from __future__ import annotations

import asyncio
from typing import Any

import cbor2
import pytest
from modal_proto import api_pb2

from wisp._call_wire import raw_frames
from wisp.server.modal_api.asgi_wire import request_message, response_message, scope_input
from wisp.server.modal_api.bridge import _answer_frame
from wisp.server.modal_api.tasks import Call

HTTP = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/a/b",
        "raw_path": b"/a/b", "query_string": b"x=1", "root_path": "", "headers": [(b"host", b"h")],
        "client": ("127.0.0.1", 5000), "server": ("/sock", None), "state": {}, "app": object(),
        "asgi": {"version": "3.0", "spec_version": "2.4"}, "extensions": {}}


def test_the_scope_goes_as_cbor_arguments_with_plain_fields_only() -> None:
    (args, kwargs) = cbor2.loads(scope_input(HTTP))
    assert kwargs == {} and len(args) == 1
    scope = args[0]
    assert scope == {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
                     "scheme": "http", "path": "/a/b", "raw_path": b"/a/b", "query_string": b"x=1",
                     "root_path": "", "headers": [[b"host", b"h"]], "client": ["127.0.0.1", 5000],
                     "method": "POST"}


@pytest.mark.parametrize(("path", "root", "expected_path"), [
    ("/label/items/3", "/label", "/label/items/3"),
    ("/label", "/label", "/label/"),  # the label alone is the app's root
    ("/items/3", "", "/items/3"),  # routed by host: no prefix
])
def test_the_gateways_path_prefix_becomes_the_root_path(path: str, root: str, expected_path: str) -> None:
    headers = [(b"host", b"h")] + ([(b"x-wisp-root-path", root.encode())] if root else [])
    scope = cbor2.loads(scope_input({**HTTP, "path": path, "headers": headers}))[0][0]
    assert (scope["root_path"], scope["path"]) == (root, expected_path)


def test_a_websocket_scope_keeps_its_subprotocols_and_has_no_method() -> None:
    ws = {**HTTP, "type": "websocket", "scheme": "ws", "subprotocols": ["chat.v2"]}
    del ws["method"]
    scope = cbor2.loads(scope_input(ws))[0][0]
    assert scope["subprotocols"] == ["chat.v2"] and "method" not in scope


def test_a_lifespan_scope_is_not_a_request() -> None:
    with pytest.raises(ValueError, match="lifespan"):
        scope_input({"type": "lifespan"})


@pytest.mark.parametrize(("message", "field", "values"), [
    ({"type": "http.request", "body": b"abc", "more_body": True}, "http_request", {"body": b"abc", "more_body": True}),
    ({"type": "http.request"}, "http_request", {"body": b"", "more_body": False}),
    ({"type": "http.disconnect"}, "http_disconnect", {}),
    ({"type": "websocket.connect"}, "websocket_connect", {}),
    ({"type": "websocket.receive", "text": "hi"}, "websocket_receive", {"text": "hi"}),
    ({"type": "websocket.receive", "bytes": b"\x00"}, "websocket_receive", {"bytes": b"\x00"}),
    ({"type": "websocket.disconnect", "code": 4002}, "websocket_disconnect", {"code": 4002}),
])
def test_request_messages(message: dict[str, Any], field: str, values: dict[str, Any]) -> None:
    asgi = request_message(message)
    assert asgi.WhichOneof("type") == field
    for name, value in values.items():
        assert getattr(getattr(asgi, field), name) == value


def test_a_response_message_does_not_go_to_a_container() -> None:
    with pytest.raises(ValueError, match="http.response.start"):
        request_message({"type": "http.response.start", "status": 200})


@pytest.mark.parametrize(("asgi", "message"), [
    (api_pb2.Asgi(http_response_start=api_pb2.Asgi.HttpResponseStart(status=201, headers=[b"a", b"1", b"b", b"2"])),
     {"type": "http.response.start", "status": 201, "headers": [(b"a", b"1"), (b"b", b"2")], "trailers": False}),
    (api_pb2.Asgi(http_response_body=api_pb2.Asgi.HttpResponseBody(body=b"x", more_body=True)),
     {"type": "http.response.body", "body": b"x", "more_body": True}),
    (api_pb2.Asgi(websocket_accept=api_pb2.Asgi.WebsocketAccept(subprotocol="chat.v2")),
     {"type": "websocket.accept", "subprotocol": "chat.v2", "headers": []}),
    (api_pb2.Asgi(websocket_accept=api_pb2.Asgi.WebsocketAccept()),
     {"type": "websocket.accept", "subprotocol": None, "headers": []}),
    (api_pb2.Asgi(websocket_send=api_pb2.Asgi.WebsocketSend(text="HI")), {"type": "websocket.send", "text": "HI"}),
    (api_pb2.Asgi(websocket_send=api_pb2.Asgi.WebsocketSend(bytes=b"\x01")), {"type": "websocket.send", "bytes": b"\x01"}),
    (api_pb2.Asgi(websocket_close=api_pb2.Asgi.WebsocketClose(code=4001, reason="bye")),
     {"type": "websocket.close", "code": 4001, "reason": "bye"}),
])
def test_response_messages(asgi: api_pb2.Asgi, message: dict[str, Any]) -> None:
    assert response_message(asgi) == message


def test_a_request_message_from_a_container_is_refused() -> None:
    with pytest.raises(ValueError, match="not a response"):
        response_message(api_pb2.Asgi(http_request=api_pb2.Asgi.HttpRequest(body=b"")))


def _chunk(index: int, body: bytes) -> api_pb2.DataChunk:
    asgi = api_pb2.Asgi(http_response_body=api_pb2.Asgi.HttpResponseBody(body=body, more_body=True))
    return api_pb2.DataChunk(data_format=api_pb2.DATA_FORMAT_ASGI, data=asgi.SerializeToString(), index=index)


def test_data_out_chunks_are_delivered_in_index_order() -> None:
    async def run() -> list[bytes]:
        call = Call("in-1", "fc-1")
        for index in (2, 3, 1, 5):  # 4 has not come: 5 waits for it
            call.put_out(_chunk(index, str(index).encode()))
        got = []
        while not call.out.empty():
            message = call.out.get_nowait()
            assert message is not None
            got.append(message["body"])
        return got

    assert asyncio.run(run()) == [b"1", b"2", b"3"]


def test_request_chunks_are_numbered_from_one() -> None:
    async def run() -> list[int]:
        call = Call("in-1", "fc-1")
        for _ in range(3):
            call.push_in(api_pb2.Asgi(http_request=api_pb2.Asgi.HttpRequest(body=b"x", more_body=True)))
        return [chunk.index for chunk in call.data_in]

    assert asyncio.run(run()) == [1, 2, 3]


@pytest.mark.parametrize(("result", "kind", "data", "summary"), [
    (api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS, data=b"pickled"), "ok", b"pickled", ""),
    (api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE, exception="ValueError('x')",
                           traceback="tb", data=b"pickled-exc"), "error", b"pickled-exc", "ValueError('x')"),
    (api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE, data_blob_id="bl-1",
                           exception="BigError()"), "error", b"", "BigError()"),
    (api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_TERMINATED), "error", b"",
     "ExecutionError: the function failed"),
])
def test_a_modal_result_is_an_answer_frame_left_pickled(result: api_pb2.GenericResult, kind: str, data: bytes,
                                                         summary: str) -> None:
    (frame,) = raw_frames(_answer_frame(result))
    assert (frame.kind, frame.data, frame.summary) == (kind, data, summary)

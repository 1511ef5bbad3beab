"""The gateway's own answers (404, 413, 502, ...): short JSON bodies with exact lengths."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Headers a caller's extras may not override: they would contradict the body we write.
_RESERVED = frozenset({"content-type", "content-length", "connection", "transfer-encoding"})

NOT_FOUND = "No web endpoint is served at this address."
BAD_GATEWAY = (
    "The container handling this request stopped before it answered. "
    "Its logs (`wisp app logs <app>`) show why; the request can be retried."
)
BAD_REQUEST = "The request is not valid HTTP/1.1, so the gateway cannot route it."
HEAD_TOO_LARGE = "The request line and headers are larger than 64 KiB; send fewer or shorter headers."
INTERNAL = "The gateway failed while handling this request. This is a bug in wisp; the server log has the traceback."


def json_response(
    status: int,
    payload: Mapping[str, object],
    *,
    connection: bytes = b"",
    headers: Mapping[str, str] | None = None,
    with_body: bool = True,
) -> bytes:
    """A complete HTTP/1.1 response. `connection` is b"close", b"keep-alive" or b"" (none).

    with_body=False answers a HEAD request: same head, no body.
    """
    body = json.dumps(payload).encode()
    parts = [
        b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)),
        b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
    ]
    if connection:
        parts.append(b"connection: " + connection + b"\r\n")
    if headers:
        parts.extend(_extra(headers))
    parts.append(b"\r\n")
    if with_body:
        parts.append(body)
    return b"".join(parts)


def not_found(labels: Iterable[str], port: int) -> dict[str, object]:
    hint = (
        f"Web endpoint URLs look like http://<label>.localhost:{port}/ or "
        f"http://127.0.0.1:{port}/<label>/; `labels` lists the ones served now."
    )
    return {"error": NOT_FOUND, "labels": sorted(labels), "hint": hint}


def too_large(limit: int) -> dict[str, object]:
    return {
        "error": f"The request body is larger than the gateway's limit of {limit} bytes. "
        "Send a smaller body, or start the server with a larger max body size."
    }


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def _extra(headers: Mapping[str, str]) -> list[bytes]:
    lines = []
    for name, value in headers.items():
        # A CR or LF would let a header value start a new header (response splitting).
        if name.lower() in _RESERVED or "\r" in name + value or "\n" in name + value:
            continue
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    return lines

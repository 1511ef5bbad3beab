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
NO_VERSION = ("The request line has no HTTP version (HTTP/0.9 is not supported); "
              "send `GET /path HTTP/1.1` with a Host header.")
VERSION_NOT_SUPPORTED = "The gateway speaks HTTP/1.1 and HTTP/1.0 only; send the request as HTTP/1.1."
def head_timed_out(timeout: float) -> str:
    return (f"The request line and headers did not arrive within {timeout:g} s; the connection is closed. "
            "Send a request's head at once.")


def body_timed_out(timeout: float) -> str:
    return (f"The request body stopped arriving: no byte of it came for {timeout:g} s, so the connection is "
            "closed. Send the whole body without pausing, then retry.")


def malformed(reason: str) -> str:
    """A request llhttp could not parse (its reason: bad framing, a bad header, ...)."""
    return (f"The request is not valid HTTP/1.1 ({reason.rstrip('.')}), so the gateway cannot route it; "
            "fix the request's framing and headers.")


def too_many_connections(limit: int) -> str:
    return (f"The gateway has {limit} client connections open, its limit (WISP_MAX_CONNECTIONS); "
            "retry in a moment, or raise the limit.")


def too_many_client_connections(limit: int) -> str:
    return (f"This client address has {limit} connections open to the gateway, its limit per address "
            "(WISP_MAX_CLIENT_CONNECTIONS); reuse connections (keep-alive) or close some, then retry.")


HEAD_TOO_LARGE = "The request line and headers are larger than 64 KiB; send fewer or shorter headers."
INTERNAL = "The gateway failed while handling this request. This is a bug in wisp; the server log has the traceback."


def json_response(
    status: int,
    payload: Mapping[str, object],
    *,
    connection: bytes = b"",
    headers: Mapping[str, str] | None = None,
    with_body: bool = True,
    request_id: bytes = b"",
) -> bytes:
    """A complete HTTP/1.1 response. `connection` is b"close", b"keep-alive" or b"" (none).

    with_body=False answers a HEAD request: same head, no body.
    """
    body = json.dumps(payload).encode()
    parts = [
        b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)),
        b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
    ]
    if request_id:
        parts.append(b"x-wisp-request-id: " + request_id + b"\r\n")
    if connection:
        parts.append(b"connection: " + connection + b"\r\n")
    if headers:
        parts.extend(_extra(headers))
    parts.append(b"\r\n")
    if with_body:
        parts.append(body)
    return b"".join(parts)


def shutting_down(grace: float) -> dict[str, object]:
    return {"error": f"The wisp server is stopping and this request did not get its answer within the "
                     f"{grace:g} s shutdown grace period. Retry it once the server is back."}


def not_found(labels: Iterable[str], port: int) -> dict[str, object]:
    hint = (
        f"Web endpoint URLs look like http://<label>.localhost:{port}/ or "
        f"http://127.0.0.1:{port}/<label>/; `labels` lists the ones served now."
    )
    # Call routes (`_c-...`) are internal: only web endpoints are listed.
    return {"error": NOT_FOUND, "labels": sorted(label for label in labels if not label.startswith("_")), "hint": hint}


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


# -- the redirect chain (S7) -------------------------------------------------------------------
def still_running(call_id: str) -> dict[str, object]:
    return {
        "status": "running",
        "call_id": call_id,
        "message": "The call is still running. GET the Location URL to wait for its result; "
        "curl -L, browsers and most HTTP clients follow it on their own.",
    }


def timed_out(timeout: float) -> dict[str, object]:
    return {
        "error": f"The function did not answer within its timeout of {timeout:g} s, so the call was stopped. "
        "If it needs longer, raise `timeout=` on the function (up to 86400 s).",
        "status": "timeout",
        "timeout": timeout,
    }


def call_malformed(value: str) -> dict[str, object]:
    return {
        "error": f"`__wisp_call_id={value[:80]}` is not a call id: wisp's look like `fc-` followed by "
        "32 hex digits. Use the Location URL of the 303 answer as it is.",
        "status": "malformed",
    }


def call_unknown(call_id: str) -> dict[str, object]:
    return {
        "error": "No call with this id is known here: it was made for another endpoint, or before the "
        "server restarted. Make the request again.",
        "status": "unknown",
        "call_id": call_id,
    }


def call_expired(call_id: str, ttl: float) -> dict[str, object]:
    return {
        "error": f"The result of this call has expired: results are kept for {ttl:g} s after the call "
        "finishes. Make the request again.",
        "status": "expired",
        "call_id": call_id,
    }

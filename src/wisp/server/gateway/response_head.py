"""The container's response head, rebuilt for the client.

The body framing toward the client is chosen here: the container's Content-Length is kept; a
chunked or close-delimited body goes to an HTTP/1.1 client chunked (so the client connection
survives it) and to an HTTP/1.0 client close-delimited.
"""
from __future__ import annotations

from typing import NamedTuple

from .responses import reason_phrase

# How the client learns where the body ends.
NO_BODY, AS_IS, CHUNKED, UNTIL_CLOSE = range(4)

_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade",
})


class ClientHead(NamedTuple):
    head: bytes
    framing: int  # NO_BODY, AS_IS, CHUNKED or UNTIL_CLOSE
    keep_alive: bool  # the client connection stays open after this response
    until_eof: bool  # the container's body ends when it closes the connection


def client_head(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    head_request: bool,
    http11: bool,
    keep_alive: bool,
    request_id: bytes = b"",
) -> ClientHead:
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
    if request_id:
        parts.append(b"x-wisp-request-id: " + request_id + b"\r\n")
    has_length = chunked = False
    for name, value in headers:
        lname = name.lower()
        if lname in _HOP_BY_HOP:
            chunked = chunked or lname == b"transfer-encoding"
            continue
        has_length = has_length or lname == b"content-length"
        parts += (name, b": ", value, b"\r\n")
    # HEAD keeps the Content-Length the container gave; 204/304 never have a body.
    bodyless = head_request or status == 204 or status == 304
    until_eof = not (bodyless or has_length or chunked)
    if bodyless:
        framing = NO_BODY
    elif has_length and not chunked:
        framing = AS_IS
    elif http11:
        framing = CHUNKED
        parts.append(b"transfer-encoding: chunked\r\n")
    else:
        framing = UNTIL_CLOSE
        keep_alive = False
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif not http11:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return ClientHead(b"".join(parts), framing, keep_alive, until_eof)


def switching_head(reason: bytes, headers: list[tuple[bytes, bytes]], request_id: bytes) -> bytes:
    """The container's `101 Switching Protocols` for a WebSocket handshake: its Upgrade stays."""
    parts = [b"HTTP/1.1 101 ", reason or b"Switching Protocols", b"\r\n"]
    for name, value in headers:
        lname = name.lower()
        if lname in _HOP_BY_HOP and lname != b"upgrade":
            continue
        parts += (name, b": ", value, b"\r\n")
    parts += (b"connection: upgrade\r\nx-wisp-request-id: ", request_id, b"\r\n\r\n")
    return b"".join(parts)

"""A client request as the gateway sees it, and the head it sends upstream for it.

Headers are scanned once, when the head is complete: the few the gateway acts on are picked
out, hop-by-hop ones dropped, and the rest kept as ready-to-join byte pieces.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exchange import Exchange

_HOST, _LENGTH, _CHUNKED, _EXPECT, _FORWARDED_FOR, _DROP = range(6)
_SPECIAL = {
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"transfer-encoding": _CHUNKED,
    b"expect": _EXPECT,
    b"x-forwarded-for": _FORWARDED_FOR,
    # Hop-by-hop: they describe the client's connection, not the one to the container.
    b"connection": _DROP,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    # The gateway is the edge: what a client claims here must not reach the app.
    b"x-forwarded-proto": _DROP,
    b"x-wisp-root-path": _DROP,
}


class Request:
    """One request on a client connection, from its first byte until its response is sent."""

    __slots__ = (
        "url", "headers", "method", "http11", "keep_alive", "host", "content_length",
        "chunked", "expect_continue", "forwarded_for", "parts", "complete", "responded",
        "body", "body_size", "exchange",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.http11 = True
        self.keep_alive = True
        self.host = b""
        self.content_length = -1  # -1: the client sent no Content-Length
        self.chunked = False
        self.expect_continue = False
        self.forwarded_for = b""
        self.parts: list[bytes] = []  # forwarded header lines, in pieces for one join
        self.complete = False  # the whole message (head and body) has been read
        self.responded = False  # the whole response has been handed to the transport
        self.body: list[bytes] = []  # body read while the request waited its turn
        self.body_size = 0
        self.exchange: Exchange | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0


def read_headers(req: Request) -> None:
    """Pick out what the gateway acts on and keep the rest for the upstream head."""
    parts = req.parts
    for name, value in req.headers:
        kind = _SPECIAL.get(name.lower())
        if kind is None:
            parts += (name, b": ", value, b"\r\n")
        elif kind == _HOST:
            req.host = value
            parts += (name, b": ", value, b"\r\n")
        elif kind == _LENGTH:
            req.content_length = int(value)  # llhttp has validated the digits
        elif kind == _CHUNKED:
            # llhttp rejects a request Transfer-Encoding that does not end in chunked.
            req.chunked = True
        elif kind == _EXPECT:
            req.expect_continue = value.lower() == b"100-continue"
        elif kind == _FORWARDED_FOR:
            req.forwarded_for = req.forwarded_for + b", " + value if req.forwarded_for else value


def upstream_head(req: Request, client_ip: bytes, root_path: bytes) -> bytes:
    """The request head for the container: the original target, never stripped of the prefix."""
    forwarded = req.forwarded_for + b", " + client_ip if req.forwarded_for else client_ip
    if req.chunked:
        framing = b"transfer-encoding: chunked\r\n"
    elif req.content_length >= 0:
        framing = b"content-length: %d\r\n" % req.content_length
    else:
        framing = b""
    return b"".join((
        req.method, b" ", req.url, b" HTTP/1.1\r\n",
        *req.parts,
        b"x-forwarded-for: ", forwarded,
        b"\r\nx-forwarded-proto: http\r\nx-wisp-root-path: ", root_path, b"\r\n",
        framing, b"\r\n",
    ))

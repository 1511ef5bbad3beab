"""A client request as the gateway sees it, and the head it sends upstream for it.

Headers are scanned once, when the head is complete: the few the gateway acts on are picked
out, hop-by-hop ones dropped, and the rest kept as ready-to-join byte pieces.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .calls import CallFetch
    from .exchange import Exchange

_HOST, _LENGTH, _CHUNKED, _EXPECT, _FORWARDED_FOR, _UPGRADE, _CONNECTION, _DROP = range(8)
_SPECIAL = {
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"transfer-encoding": _CHUNKED,
    b"expect": _EXPECT,
    b"x-forwarded-for": _FORWARDED_FOR,
    # Hop-by-hop: they describe the client's connection, not the one to the container.
    b"connection": _CONNECTION,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    # Hop-by-hop too, but a WebSocket handshake passes it on (see upstream_head).
    b"upgrade": _UPGRADE,
    # The gateway is the edge: what a client claims here must not reach the app.
    b"x-forwarded-proto": _DROP,
    b"x-wisp-root-path": _DROP,
    b"x-wisp-request-id": _DROP,
    # Proxy-auth credentials (wisp.server.auth) are the gateway's to check, never the app's to see.
    b"modal-key": _DROP,
    b"modal-secret": _DROP,
}


class Request:
    """One request on a client connection, from its first byte until its response is sent."""

    __slots__ = (
        "body",
        "body_size",
        "chunked",
        "complete",
        "content_length",
        "exchange",
        "expect_continue",
        "forwarded_for",
        "headers",
        "host",
        "http11",
        "keep_alive",
        "label",
        "method",
        "parts",
        "request_id",
        "responded",
        "sending_seen",
        "tunnel_data",
        "upgrade",
        "url",
        "websocket",
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
        self.upgrade = b""  # the Upgrade header's value
        self.websocket = False  # a WebSocket handshake: the connection becomes a tunnel on 101
        self.parts: list[bytes] = []  # forwarded header lines, in pieces for one join
        self.complete = False  # the whole message (head and body) has been read
        self.responded = False  # the whole response has been handed to the transport
        self.body: list[bytes] = []  # body read while the request waited its turn
        self.body_size = 0
        self.exchange: Exchange | CallFetch | None = None
        self.request_id = b""  # X-Wisp-Request-Id, given when the request becomes active
        self.label = ""  # the web function it was routed to
        self.tunnel_data = b""  # bytes the client sent after a WebSocket handshake's head
        self.sending_seen = 0.0  # the gateway's sweep last saw the client still sending the body

    def stored(self) -> Request:
        """This request as a stored response's future readers know it (a detached call, S7):
        its method, target, id and body framing, its body fully read; none of its headers or
        connection state, so the response is framed for any HTTP/1.1 client that fetches it."""
        copy = Request()
        copy.method, copy.url, copy.request_id = self.method, self.url, self.request_id
        copy.chunked, copy.content_length, copy.body_size = self.chunked, self.content_length, self.body_size
        copy.complete = True
        return copy

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0


Refusal = tuple[int, str]  # the status and the message of a request the gateway will not forward


def read_headers(req: Request) -> Refusal | None:
    """Pick out what the gateway acts on and keep the rest for the upstream head.

    Returns why the request must be refused (its status and message), or None.
    """
    parts = req.parts
    connection = b""
    hosts = 0
    framing: Refusal | None = None
    for name, value in req.headers:
        kind = _SPECIAL.get(name.lower())
        if kind is None:
            parts += (name, b": ", value, b"\r\n")
        elif kind == _HOST:
            hosts += 1
            req.host = value
            parts += (name, b": ", value, b"\r\n")
        elif kind == _LENGTH:
            # llhttp refuses these too (and validates the digits); checked here again, where it
            # costs nothing but to requests that carry the header, so that no parser setting or
            # version can ever let a body be framed two ways (request smuggling).
            if req.content_length >= 0 or req.chunked:
                framing = (400, TWO_LENGTHS if req.content_length >= 0 else LENGTH_AND_CHUNKED)
            req.content_length = int(value)
        elif kind == _CHUNKED:
            # llhttp rejects a request Transfer-Encoding that does not end in chunked; one that
            # has another coding before it (`gzip, chunked`) would reach the app undecoded.
            if req.content_length >= 0 or req.chunked:
                framing = (400, LENGTH_AND_CHUNKED if req.content_length >= 0 else TWO_CODINGS)
            elif value.lower() != b"chunked":
                framing = (501, ONLY_CHUNKED)
            elif not req.http11:  # RFC 9112 6.1: faulty framing in an HTTP/1.0 message
                framing = (400, CHUNKED_10)
            req.chunked = True
        elif kind == _EXPECT:
            req.expect_continue = value.lower() == b"100-continue"
        elif kind == _FORWARDED_FOR:
            req.forwarded_for = req.forwarded_for + b", " + value if req.forwarded_for else value
        elif kind == _UPGRADE:
            req.upgrade = value
        elif kind == _CONNECTION:
            connection = connection + b"," + value if connection else value
    if hosts > 1:
        # Routing by one and the app reading the other would let a client reach one function
        # while the app believes it is another (RFC 9112 3.2: 400).
        return 400, TWO_HOSTS
    if framing is not None:
        return framing
    if connection and connection.lower() not in _COMMON_CONNECTION:
        _drop_listed(parts, connection)
    if not req.url.startswith(b"/"):
        refused = _absolute_form(req)
        return None if refused is None else (400, refused)
    return None


TWO_HOSTS = "The request has more than one Host header; send exactly one."
TWO_LENGTHS = "The request has more than one Content-Length header; send exactly one."
LENGTH_AND_CHUNKED = ("The request has both Content-Length and Transfer-Encoding, so its body could be read two "
                      "ways; send one of them (Content-Length for a body of known size).")
TWO_CODINGS = "The request has more than one Transfer-Encoding header; send one: `Transfer-Encoding: chunked`."
ONLY_CHUNKED = ("The gateway takes no transfer coding but `Transfer-Encoding: chunked`; send the body with "
                "Content-Length or plain chunked (a compressed body says so in Content-Encoding).")
CHUNKED_10 = "An HTTP/1.0 request cannot be chunked; send it as HTTP/1.1, or with Content-Length."
BAD_TARGET = ("The request target is neither a path (`/path`) nor an absolute http:// or https:// URL "
              "without user info; send `GET /path HTTP/1.1` with a Host header.")


def _absolute_form(req: Request) -> str | None:
    """`GET http://host:port/path HTTP/1.1` (RFC 9112 3.2.2): the target's authority replaces
    the Host header, for routing and for the app, and the app gets the origin form (`/path`).

    Other targets (`*` of OPTIONS, say) are left as they are: they route nowhere.
    """
    scheme, sep, rest = req.url.partition(b"://")
    if not sep:
        return None
    if scheme.lower() not in (b"http", b"https"):
        return BAD_TARGET
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority, target = rest[:end], rest[end:]
    if not authority or b"@" in authority:  # user info is an error in http URIs (RFC 9110 4.2.4)
        return BAD_TARGET
    req.url = target if target.startswith(b"/") else b"/" + target
    req.host = authority
    parts = req.parts
    for i in range(0, len(parts), 4):
        if parts[i].lower() == b"host":
            parts[i + 2] = authority
            break
    else:
        parts[:0] = (b"host", b": ", authority, b"\r\n")
    return None


# Connection values that name no other header: the usual case costs one lookup.
_COMMON_CONNECTION = frozenset({b"close", b"keep-alive", b"upgrade", b"keep-alive, upgrade"})


def _drop_listed(parts: list[bytes], connection: bytes) -> None:
    """`Connection: X-Foo` makes X-Foo hop-by-hop too (RFC 9110 7.6.1): it is not forwarded."""
    listed = {token.strip().lower() for token in connection.split(b",")}
    listed.discard(b"host")  # not hop-by-hop: routing and the app both need it
    kept: list[bytes] = []
    for i in range(0, len(parts), 4):  # parts holds (name, ": ", value, CRLF) per header
        if parts[i].lower() not in listed:
            kept += parts[i: i + 4]
    parts[:] = kept


def is_websocket(req: Request) -> bool:
    """A WebSocket handshake the gateway tunnels (once llhttp has seen `Connection: upgrade`).

    Other upgrades (h2c, ...) are not proxied: the request goes on without its Upgrade header.
    """
    return req.method == b"GET" and not req.has_body and req.upgrade.lower() == b"websocket"


def upstream_head(req: Request, client_ip: bytes, root_path: bytes, *, strip_prefix: bool = False) -> bytes:
    """The request head for the container: the original target, never stripped of the prefix
    (the agent sets ASGI root_path from x-wisp-root-path), except for a web_server, whose own
    server knows nothing of the prefix: it gets the rest of the path, the prefix named in
    X-Forwarded-Prefix."""
    url = req.url
    if strip_prefix and root_path:
        url = url[len(root_path):]
        if not url.startswith(b"/"):
            url = b"/" + url
        root_path, prefix = b"", b"x-forwarded-prefix: " + root_path + b"\r\n"
    else:
        prefix = b""
    forwarded = req.forwarded_for + b", " + client_ip if req.forwarded_for else client_ip
    if req.websocket:
        framing = b"connection: upgrade\r\nupgrade: " + req.upgrade + b"\r\n"
    elif req.chunked:
        framing = b"transfer-encoding: chunked\r\n"
    elif req.content_length >= 0:
        framing = b"content-length: %d\r\n" % req.content_length
    else:
        framing = b""
    return b"".join((
        req.method, b" ", url, b" HTTP/1.1\r\n",
        *req.parts, prefix,
        b"x-forwarded-for: ", forwarded,
        b"\r\nx-forwarded-proto: http\r\nx-wisp-root-path: ", root_path,
        b"\r\nx-wisp-request-id: ", req.request_id, b"\r\n",
        framing, b"\r\n",
    ))

"""The client side: one asyncio protocol per client connection, parsing with httptools.

Requests on a connection are answered strictly in order. A request becomes *active* when its
head is complete and no earlier one is still in progress; later pipelined requests queue (with
reading paused) until it is done, i.e. fully read and fully answered.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import httptools

from . import responses
from ._target import Lease, Target
from .calls import CALL_MARK, CallFetch, Calls, call_param
from .exchange import Exchange
from .request import Request, is_websocket, read_headers, upstream_head
from .routing import resolve_raw
from .tunnel import Tunnel
from .upstream import WRITE_BUFFER_HIGH, UpstreamConnection, UpstreamPool

logger = logging.getLogger("wisp.gateway")

LINGER_SECONDS = 2.0  # after an early answer, how long unread request bytes are drained
DRAIN_LIMIT = 64 * 1024  # an early answer keeps the connection if at most this is left to read
MAX_HEAD = 64 * 1024  # request line and headers; llhttp itself sets no limit
REQUEST_LINE_SEEN = 8 * 1024  # bytes kept to recognise a request line without a version
# Why reading from the client is paused; reading resumes when no reason is left.
_PIPELINE = 1  # a later request arrived while one is in progress
_BODY = 2  # the container is not taking the request body as fast as it arrives
_TUNNEL = 4  # a WebSocket handshake is on its way: what follows it is not HTTP


def _drainable(req: Request) -> bool:
    """Whether what is left of an answered request's body is small enough to read and drop,
    keeping the connection. A client waiting for 100 Continue may never send it: no."""
    left = req.content_length - req.body_size
    return not req.chunked and not req.expect_continue and left <= DRAIN_LIMIT


@dataclass(eq=False)
class GatewayState:
    """What every client connection of one gateway shares."""

    routes: Mapping[str, Target]
    pool: UpstreamPool
    max_body_size: int
    calls: Calls = field(default_factory=Calls)
    redirect_after: float = 150.0  # seconds without a response before the 303 (S7)
    port: int = 0
    draining: bool = False  # the server is stopping: no redirects, every response is a last one
    connections: set[ClientConnection] = field(default_factory=set)
    # Connections admitted at once, in all and from one client address; past them a new one is
    # answered 503 and closed (counted per connection, never per request).
    max_connections: int = 1 << 62
    max_client_connections: int = 1 << 62
    admitted: int = 0
    by_client: dict[bytes, int] = field(default_factory=dict)
    _id_prefix: bytes = field(default_factory=lambda: os.urandom(4).hex().encode())
    _id_count: int = 0

    def request_id(self) -> bytes:
        """X-Wisp-Request-Id: unique per gateway run (a random prefix and a counter), cheap."""
        self._id_count += 1
        return b"%s-%x" % (self._id_prefix, self._id_count)


class ClientConnection(asyncio.Protocol):
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set at once
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b""
        self.idle_since: float | None = self.loop.time()  # None while a request is in progress
        self.write_paused = False
        self._parsing: Request = Request()
        self._active: Request | None = None
        self._queue: deque[Request] = deque()
        self._pauses = 0
        self._closing = False
        self._unreadable = False  # bytes past this point are not parsed (bad input, an upgrade)
        self._unreadable_answer = (400, responses.BAD_REQUEST)
        self._chunk_size = 0  # of the data being parsed
        # Bytes of the head being parsed, counted from the chunk after the one it began in
        # (an underestimate, so only heads truly over the limit are refused); None: no head.
        self._head_size: int | None = None
        self._head_known = 0  # bytes of the request line and the headers parsed whole so far
        # The end of the incoming head while its request line may still be arriving (None: it
        # has ended, or no head is arriving); see _check_request_line.
        self._line: bytes | None = None
        self._linger: asyncio.TimerHandle | None = None
        # When a head still incomplete after a read began to arrive (None: none is): the sweep
        # answers 408 past the gateway's head_timeout, however slowly its bytes keep coming.
        self.head_started: float | None = None
        # The body being read as the sweep last saw it: (request, bytes read, when that count
        # was first seen). Only the sweep reads and writes it; see check_body.
        self._body_seen: tuple[Request, int, float] | None = None
        self._admitted = False  # counted in the gateway's connection caps

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio passes a BaseTransport; a stream socket's is a Transport
        self.transport.set_write_buffer_limits(WRITE_BUFFER_HIGH)  # see upstream.py
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client_ip = peer[0].encode()
        state = self.state
        state.connections.add(self)
        from_client = state.by_client.get(self.client_ip, 0)
        if state.admitted >= state.max_connections:
            self._refuse_connection(responses.too_many_connections(state.max_connections))
        elif from_client >= state.max_client_connections:
            self._refuse_connection(responses.too_many_client_connections(state.max_client_connections))
        else:
            state.admitted += 1
            state.by_client[self.client_ip] = from_client + 1
            self._admitted = True

    def _refuse_connection(self, message: str) -> None:
        """Over a connection cap: 503 before any request is read, and close."""
        self._unreadable = True
        self.write(responses.json_response(503, {"error": message}, connection=b"close",
                                           headers={"Retry-After": "1"}))
        self._close(linger=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        state = self.state
        state.connections.discard(self)
        if self._admitted:
            self._admitted = False
            state.admitted -= 1
            left = state.by_client[self.client_ip] - 1
            if left:
                state.by_client[self.client_ip] = left
            else:
                del state.by_client[self.client_ip]
        if self._linger is not None:
            self._linger.cancel()
        self._abort_active()
        self._queue.clear()

    # No eof_received: like uvicorn and nginx, a client's EOF counts as leaving (a full close
    # looks the same until a write fails), so the transport closes and connection_lost aborts.

    def data_received(self, data: bytes) -> None:
        if self._closing or self._unreadable:
            return  # draining before close, or past bytes that cannot be parsed
        self._chunk_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0]:] if exc.args else b"")
        except httptools.HttpParserCallbackError as exc:
            logger.error("gateway error while reading a request", exc_info=exc.__context__ or exc)
            self._internal_error()
        except httptools.HttpParserError as exc:  # llhttp's reason says what is wrong with the framing
            self._bad_request(400, responses.malformed(str(exc)))
        else:
            if self._head_size is not None:  # a head is still arriving: the rare path
                if self.head_started is None:
                    self.head_started = self.loop.time()
                self._count_head(max(self._head_size + len(data), self._head_known))
                if self._line is not None and not self._closing:
                    self._check_request_line(data)

    def _check_request_line(self, data: bytes) -> None:
        """Refuse a request line that ended without an HTTP version (HTTP/0.9) as it arrives.

        llhttp takes `GET /` + CRLF for HTTP/0.9 and waits for headers that such a client never
        sends; without this it would sit until the idle timeout. Only heads that are still
        incomplete after a read get here, and only until their first line has ended.
        """
        line = self._line + data if self._line else data
        if not line.endswith(b"\n"):
            self._line = line[-REQUEST_LINE_SEEN:]
            return
        self._line = None
        last = line[:-1].rstrip(b"\r").rpartition(b"\n")[2]
        if not self._parsing.headers and last == self.parser.get_method() + b" " + self._parsing.url:
            self._bad_version("0.9")

    def _count_head(self, size: int) -> None:
        # httptools gathers a header value whole before calling on_header, and llhttp has no
        # limit of its own: an endless head would take all memory.
        self._head_size = size
        if size > MAX_HEAD:
            self._bad_request(431, responses.HEAD_TOO_LARGE)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._active is not None and self._active.exchange is not None:
            self._active.exchange.client_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._active is not None and self._active.exchange is not None:
            self._active.exchange.client_resumed()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._parsing = Request()
        self._head_size = -self._chunk_size
        self._head_known = 0
        self._line = b""

    def on_url(self, url: bytes) -> None:
        self._parsing.url += url
        self._head_known += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsing.headers.append((name, value))
        self._head_known += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._head_size = None
        self.head_started = None
        if self._head_known > MAX_HEAD:  # a big head that arrived in few reads
            self._bad_request(431, responses.HEAD_TOO_LARGE)
            return
        req = self._parsing
        parser = self.parser
        req.method = parser.get_method()
        version = parser.get_http_version()
        req.http11 = version == "1.1"
        if not req.http11 and version != "1.0":
            self._bad_version(version)
            return
        req.keep_alive = parser.should_keep_alive()
        refused = read_headers(req)
        if refused is not None:
            self._bad_request(*refused)
            return
        req.websocket = parser.should_upgrade() and is_websocket(req)
        self.idle_since = None
        if self._closing or self._unreadable:  # past bad input earlier in this read
            return
        if self._active is None:
            self._start(req)
        else:
            self._queue.append(req)
            self._pause(_PIPELINE)

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        req.body_size += len(body)
        if req.body_size > self.state.max_body_size:
            if req is self._active:
                self._too_large(req)
            return
        if req.exchange is not None:
            req.exchange.feed_body(body)
        elif req is not self._active:
            req.body.append(body)  # queued: sent upstream when its turn comes

    def on_message_complete(self) -> None:
        req = self._parsing
        req.complete = True
        if req.exchange is not None:
            req.exchange.end_body()
        if req is self._active and req.responded:
            self._done(req)

    # -- one request -----------------------------------------------------------------------
    def _start(self, req: Request) -> None:
        self._active = req
        state = self.state
        routes = state.routes
        req.request_id = state.request_id()
        found = resolve_raw(req.host, req.url, routes)
        target = routes.get(found[0]) if found is not None else None
        if found is None or target is None:
            self.respond(404, responses.not_found(routes, state.port))
            return
        req.label = found[0]
        admit = target.admit
        if admit is not None:  # checked before any container starts or the request queues
            refused = admit(req.headers)
            if refused is not None:
                self.respond(refused.status, {"error": refused.message}, refused.headers)
                return
        if CALL_MARK in req.url and self._fetch_call(req):
            return
        if max(req.content_length, req.body_size) > state.max_body_size:
            self.respond(413, responses.too_large(state.max_body_size))
        else:
            root = found[1].encode("latin-1")
            strip = bool(root) and target.strip_path_prefix
            head = upstream_head(req, self.client_ip, root, strip_prefix=strip)
            exchange = req.exchange = Exchange(self, state.pool, req, head, self.loop.time())
            for chunk in req.body:
                exchange.feed_body(chunk)
            req.body = []
            if req.complete:
                exchange.end_body()
            exchange.start(target)

    def _fetch_call(self, req: Request) -> bool:
        """A request for a detached call's result (S7): it never starts a new call."""
        value = call_param(req.url)
        if value is None:
            return False  # the marker is elsewhere in the target: an ordinary request
        calls = self.state.calls
        call = calls.get(value, req.label)
        if call is None:
            self.respond(*calls.missing(value))
        else:
            fetch = req.exchange = CallFetch(self, call, head_only=req.method == b"HEAD", started=self.loop.time())
            fetch.start()
        return True

    def check_wait(self, now: float) -> None:
        """Called by the gateway's sweep: redirect a request whose response has not started
        within the window, or answer 504 once the function's timeout has passed."""
        req = self._active
        handler = req.exchange if req is not None else None
        if req is None or handler is None or handler.head_sent or handler.done or self._closing:
            return
        waited = now - handler.started
        state = self.state
        if isinstance(handler, CallFetch):
            if waited >= state.redirect_after:
                handler.abort()
                req.exchange = None
                self._redirect(req, handler.call.location(), handler.call.id)
        elif waited >= handler.timeout:
            handler.abort(504)
            req.exchange = None
            self.respond(504, responses.timed_out(handler.timeout))
        elif not req.complete:
            req.sending_seen = now  # a slow client's upload is not the function's wait
        elif now - max(handler.started, req.sending_seen) >= state.redirect_after and not req.websocket \
                and not state.draining:  # a stopping server can neither keep a call nor be asked for it
            req.exchange = None
            call = state.calls.detach(handler, req.label, req.url)
            self._redirect(req, call.location(), call.id)

    def _redirect(self, req: Request, location: str, call_id: bytes) -> None:
        self.respond(303, responses.still_running(call_id.decode()), {"Location": location})

    def _done(self, req: Request) -> None:
        """The active request is fully read and fully answered."""
        self._active = None
        # The request and its exchange point at each other: unlinked, both are freed at once
        # by reference counting instead of piling up for the cyclic garbage collector.
        req.exchange = None
        if self._closing:
            return
        if not req.keep_alive:
            self._close()
        elif self._queue:
            # Not at once: a long pipeline of instant answers would recurse.
            self.loop.call_soon(self._next)
        elif self._unreadable:
            self._reject(*self._unreadable_answer)
        else:
            self.idle_since = self.loop.time()

    def _next(self) -> None:
        if self._closing or self._active is not None or not self._queue:
            return
        req = self._queue.popleft()
        if not self._queue:
            self._resume(_PIPELINE)  # the request's own body may still be on its way
        self._start(req)

    def _too_large(self, req: Request) -> None:
        exchange = req.exchange
        if exchange is not None and exchange.head_sent:
            exchange.abort()
            self._close()
        elif not req.responded:
            if exchange is not None:
                exchange.abort()
            self.respond(413, responses.too_large(self.state.max_body_size))

    # -- used by the exchange (and for the gateway's own answers) --------------------------
    def write(self, data: bytes) -> None:
        # is_closing(): a failed write closes the transport before connection_lost is called.
        if not self._closing and not self.transport.is_closing():
            self.transport.write(data)

    def respond(self, status: int, payload: Mapping[str, object], headers: Mapping[str, str] | None = None) -> None:
        """Answer the active request from the gateway itself (a JSON error)."""
        req = self._active
        assert req is not None
        req.responded = True
        unread = not req.complete and req.has_body and not _drainable(req)
        if unread:
            req.keep_alive = False  # the body would be read as the next request: close instead
        connection = b"close" if not req.keep_alive else b"" if req.http11 else b"keep-alive"
        self.write(responses.json_response(
            status, payload, connection=connection, headers=headers, with_body=req.method != b"HEAD",
            request_id=req.request_id,
        ))
        if status >= 500:
            logger.warning("request %s to %s answered %d: %s", req.request_id.decode(), req.label or "-",
                           status, payload.get("error"))
        if unread:
            self._close(linger=True)
        elif req.complete:
            self._done(req)

    def send_continue(self) -> None:
        self.write(responses.CONTINUE)

    def finish_response(self, keep_alive: bool) -> None:
        req = self._active
        assert req is not None
        req.responded = True
        req.keep_alive = req.keep_alive and keep_alive
        if req.complete:
            self._done(req)
        elif not req.keep_alive or not _drainable(req):
            self._close(linger=True)
        # else: the rest of the body is read and dropped, then the next request starts

    def break_response(self) -> None:
        """The response cannot be completed: a cut connection is how the client learns it."""
        self._close()

    def hold_body(self, hold: bool) -> None:
        if hold:
            self._pause(_BODY)
        else:
            self._resume(_BODY)

    def start_tunnel(self, conn: UpstreamConnection, lease: Lease) -> None:
        """The container accepted the WebSocket handshake: from now on, bytes are piped."""
        req = self._active
        assert req is not None
        req.responded = True
        if self._closing or self.transport.is_closing():
            conn.close()
            lease.release(status=101)
            return
        Tunnel(self, conn, lease, req.tunnel_data)
        req.tunnel_data = b""

    # -- closing ---------------------------------------------------------------------------
    def close_idle(self) -> None:
        if self._active is None:
            self._close()

    @property
    def busy(self) -> bool:
        """A request is in progress (or a WebSocket open): a drain waits for it."""
        return self._active is not None and not self._closing

    def drain(self) -> None:
        """The server is stopping: close now if idle, else after the response in progress,
        which then says `Connection: close`; requests pipelined behind it are not answered
        (the client retries them, RFC 9112 9.3.2)."""
        req = self._active
        if req is None:
            self._close()
        else:
            req.keep_alive = False

    def give_up(self, grace: float) -> str:
        """The shutdown grace is over: a request still waiting for its response gets a 503
        ("503"); a response under way or a WebSocket is cut ("cut"); "" if nothing was left."""
        req = self._active
        if req is None or self._closing:
            self.shutdown()
            return ""
        handler = req.exchange
        if req.responded or (handler is not None and handler.head_sent):
            self.shutdown()
            return "cut"
        if handler is not None:
            handler.abort(503)
            req.exchange = None
        req.keep_alive = False
        self.respond(503, responses.shutting_down(grace), {"Retry-After": "1"})
        return "503"

    def shutdown(self) -> None:
        """Cut the connection now: a client that does not read must not hold up a shutdown."""
        self._abort_active()
        self._closing = True
        self.transport.abort()

    def _close(self, *, linger: bool = False) -> None:
        if self._closing:
            return
        self._closing = True
        transport = self.transport
        if linger and transport.can_write_eof() and not transport.is_closing():
            # Closing with unread input makes the kernel send RST, which can destroy the answer
            # before the client reads it; half-close and drain for a while instead.
            self._pauses = 0
            transport.resume_reading()
            transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _abort_active(self) -> None:
        req = self._active
        if req is not None and req.exchange is not None:
            req.exchange.abort()

    def check_body(self, now: float, timeout: float) -> None:
        """Called by the gateway's sweep for a connection with a request in progress: a body that
        has not grown for `timeout` seconds while the gateway was reading is answered 408 (or,
        once its response has begun, cut). Not while reading is paused (the gateway's own choice)
        or while a client that asked for 100 Continue has not got it. The request path itself
        does nothing for this: the sweep compares the body's size with what it saw last."""
        req = self._active
        if req is None or req.complete or self._closing or self._unreadable:
            self._body_seen = None
            return
        size = req.body_size
        seen = self._body_seen
        if seen is None or seen[0] is not req or seen[1] != size or self._pauses \
                or (req.expect_continue and size == 0):
            self._body_seen = (req, size, now)
        elif now - seen[2] >= timeout:
            self._body_seen = None
            self._unreadable = True
            self._cut_active(408, responses.body_timed_out(timeout))

    def head_timed_out(self, timeout: float) -> None:
        """A head that has not arrived whole within the gateway's head_timeout (slowloris)."""
        self.head_started = None
        if not self._closing and not self._unreadable:
            self._bad_request(408, responses.head_timed_out(timeout))

    def _reject(self, status: int, message: str) -> None:
        """Answer input that is not a request (or a failure of ours), then close."""
        self.write(responses.json_response(status, {"error": message}, connection=b"close"))
        self._close(linger=True)

    def _bad_request(self, status: int, message: str) -> None:
        self._unreadable = True
        self._unreadable_answer = (status, message)
        self._pause(_PIPELINE)  # nothing after the bad bytes can be parsed
        req = self._active
        if req is None:
            self._reject(status, message)
        elif not req.complete:  # the bad bytes are in the active request's body
            self._cut_active(status, message)
        # else: the requests before the bad bytes are answered first; see _done

    def _bad_version(self, version: str) -> None:
        if version.startswith(("0.", "1.")):
            self._bad_request(400, responses.NO_VERSION)
        else:
            self._bad_request(505, responses.VERSION_NOT_SUPPORTED)

    def _internal_error(self) -> None:
        self._unreadable = True
        self._cut_active(500, responses.INTERNAL)

    def _cut_active(self, status: int, message: str) -> None:
        req = self._active
        exchange = req.exchange if req is not None else None
        if exchange is not None:
            exchange.abort()
        if req is None or req.responded or (exchange is not None and exchange.head_sent):
            self._close()
        else:
            req.responded = True
            self._reject(status, message)

    def _upgrade(self, rest: bytes) -> None:
        # Whatever the client sends after an upgrade request is not HTTP: nothing is parsed past
        # it. A WebSocket handshake keeps those bytes for the tunnel and waits for the 101;
        # other upgrades (h2c, ...) were forwarded without their Upgrade header.
        self._unreadable = True
        req = self._parsing
        if req is self._active or req in self._queue:
            req.keep_alive = False  # answered without a 101: _done closes rather than answering 400
            if req.websocket:
                req.tunnel_data = rest
                self._pause(_TUNNEL)  # the tunnel takes over reading
            else:
                self._pause(_PIPELINE)
        else:
            self._close()

    def _pause(self, reason: int) -> None:
        if not self._pauses and not self._closing:
            self.transport.pause_reading()
        self._pauses |= reason

    def _resume(self, reason: int) -> None:
        if self._pauses & reason:
            self._pauses &= ~reason
            if not self._pauses and not self._closing:
                self.transport.resume_reading()

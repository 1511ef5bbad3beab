"""One proxied request: a lease on a container, a connection to it, and the bytes between.

Driven by callbacks from both sides. A request the target has no free slot for at once waits
in its queue (`Target.wait`) and gets the slot by a callback; a task runs only to open a
connection when no idle one to the container exists.
Every way out releases the lease exactly once: normally, broken (the container failed this
request), or plainly when the client went away.
"""
from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping
from typing import Protocol

from . import responses
from ._target import CALL_PARAM, Lease, Target, TargetUnavailable, Waiting
from .request import Request
from .response_head import CHUNKED, NO_BODY, client_head, switching_head
from .upstream import UpstreamConnection, UpstreamPool

logger = logging.getLogger("wisp.gateway")

# Request body held while no container connection exists yet; past this, stop reading.
PENDING_LIMIT = 256 * 1024
# A request is replayed on a fresh connection only if no more than this was sent.
REPLAY_LIMIT = 64 * 1024
_LAST_CHUNK = b"0\r\n\r\n"
# Seconds a call may run when its Target does not say (FunctionSpec.timeout's default).
DEFAULT_TIMEOUT = 300.0
# The container never read the request: it closed an idle connection as we reused it.
_UNREAD = (BrokenPipeError, ConnectionResetError)


class Phase(enum.IntEnum):
    """Where one proxied request is. The allowed steps are TRANSITIONS; `_to()` refuses others.
    (An IntEnum: hashed in C, as the hot path looks phases up in sets three times a request.)"""

    ACQUIRING = 1  # waiting for a lease on a container (a cold start, a full pool)
    CONNECTING = 2  # a lease, and no connection to its container yet
    FORWARDING = 3  # the request goes to the container; no response head yet
    RESPONDING = 4  # the response head reached the client; the body streams
    SWITCHING = 5  # the container answered 101 to a WebSocket handshake
    ANSWERED = 6  # ended after a head reached the client (done, cut, or a tunnel now)
    CLOSED = 7  # ended before any head from the container (the client left, 502, 503)


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.ACQUIRING: frozenset({Phase.CONNECTING, Phase.FORWARDING, Phase.CLOSED}),
    Phase.CONNECTING: frozenset({Phase.FORWARDING, Phase.CLOSED}),
    # CONNECTING again: a reused connection turned out dead before reading the request (replay)
    Phase.FORWARDING: frozenset({Phase.RESPONDING, Phase.SWITCHING, Phase.CONNECTING, Phase.CLOSED}),
    Phase.RESPONDING: frozenset({Phase.ANSWERED}),
    Phase.SWITCHING: frozenset({Phase.ANSWERED}),
    Phase.ANSWERED: frozenset(),
    Phase.CLOSED: frozenset(),
}
_HEAD_SENT = frozenset({Phase.RESPONDING, Phase.SWITCHING, Phase.ANSWERED})
_ENDED = frozenset({Phase.ANSWERED, Phase.CLOSED})


class Client(Protocol):
    """What an exchange needs from the client connection it answers."""

    write_paused: bool

    def write(self, data: bytes) -> None: ...
    def respond(self, status: int, payload: Mapping[str, object], headers: Mapping[str, str] | None = None) -> None: ...
    def send_continue(self) -> None: ...
    def finish_response(self, keep_alive: bool) -> None: ...
    def break_response(self) -> None: ...
    def hold_body(self, hold: bool) -> None: ...
    def start_tunnel(self, conn: UpstreamConnection, lease: Lease) -> None: ...


class Exchange:
    __slots__ = (
        "_acquiring",
        "_body_done",
        "_connecting",
        "_framing",
        "_head",
        "_held",
        "_keep_alive",
        "_out",
        "_pending",
        "_pending_size",
        "_retried",
        "_reusable",
        "_sent",
        "_sent_size",
        "_status",
        "_until_eof",
        "_upstream_full",
        "call_param",
        "client",
        "conn",
        "done",
        "head_sent",
        "lease",
        "phase",
        "pool",
        "request",
        "started",
        "timeout",
    )

    def __init__(self, client: Client, pool: UpstreamPool, request: Request, head: bytes, started: float) -> None:
        self.client = client
        self.request = request
        self.pool = pool
        self.started = started  # loop time when the request became active
        self.timeout = DEFAULT_TIMEOUT  # seconds the function may take to start its response
        self.call_param = CALL_PARAM  # what the redirect chain names it by, if it is detached
        self.phase = Phase.ACQUIRING
        # Derived from `phase` and written only by `_to()`: the hot path reads them as plain slots.
        self.done = False  # ended: nothing more reaches the client from this exchange
        self.head_sent = False  # the client has a response head (a failure can only cut it)
        self.lease: Lease | None = None
        self.conn: UpstreamConnection | None = None
        self._head = head  # what to send first on a new connection
        self._acquiring: Waiting | asyncio.Handle | None = None  # queued for a slot, or about to ask
        self._connecting: asyncio.Task[UpstreamConnection] | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._body_done = False
        # What a reused connection was sent, kept to replay on a fresh one if it was dead.
        self._sent: list[bytes] | None = None
        self._sent_size = 0
        self._retried = False
        self._framing = NO_BODY
        self._keep_alive = True
        self._reusable = False
        self._until_eof = False
        self._held = False
        self._upstream_full = False
        self._status: int | None = None  # what the client was answered, for metrics
        # Response bytes from one read of the container, sent to the client in one write:
        # a small response's head and body go out in one syscall.
        self._out: list[bytes] = []

    def _to(self, phase: Phase) -> None:
        if phase not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"exchange {self.request.request_id.decode()}: {self.phase.name.lower()} -> "
                               f"{phase.name.lower()}")
        self.phase = phase
        self.done = phase in _ENDED
        self.head_sent = phase in _HEAD_SENT

    def _end(self) -> None:
        """To the ended phase that says whether the client had a head from the container."""
        self._to(Phase.ANSWERED if self.phase in _HEAD_SENT else Phase.CLOSED)

    # -- from the client connection ------------------------------------------------------------
    def start(self, target: Target) -> None:
        self.timeout = target.timeout
        self.call_param = target.call_param
        req = self.request
        if req.complete or not req.has_body:
            self._acquire(target)
        else:  # the body is still being parsed: a turn later, the part read with the head goes out in the head's write
            self._acquiring = asyncio.get_running_loop().call_soon(self._acquire, target)

    def _acquire(self, target: Target) -> None:
        """A free slot at once, or a place in the target's queue: no task and no future either
        way, and a queued request gets its slot inside the step that freed it."""
        self._acquiring = None
        lease = target.try_acquire()
        if lease is not None:
            self._acquired(lease)
            return
        try:
            self._acquiring = target.wait(self._delivered)
        except Exception as exc:
            self._acquire_failed(exc)

    def _delivered(self, outcome: Lease | BaseException) -> None:
        self._acquiring = None
        if isinstance(outcome, BaseException):
            self._acquire_failed(outcome)
        else:
            self._acquired(outcome)

    def feed_body(self, data: bytes) -> None:
        if not self.done:
            self._send(b"%x\r\n%b\r\n" % (len(data), data) if self.request.chunked else data)

    def end_body(self) -> None:
        if not self.done:
            self._body_done = True
            if self.request.chunked:
                self._send(_LAST_CHUNK)

    def client_paused(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def client_resumed(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    def abort(self, status: int | None = None) -> None:
        """The client left (or must be cut off): drop the container connection, free the slot.

        `status`: what the gateway answers instead (504 past the timeout), for the metrics."""
        if self.done:
            return
        self._end()
        if status is not None:
            self._status = status
        if self._acquiring is not None:
            self._acquiring.cancel()  # a lease that still arrives is released by _acquired
            self._acquiring = None
        if self._connecting is not None:
            self._connecting.cancel()  # a connection that still arrives goes to the pool
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self._update_hold()
        # The slot is freed a turn later: a loop that aborts several exchanges at once (a drain's
        # 503s, close, the sweep's 504s, clients gone together) must not hand it to a waiting
        # one it aborts next, which would have sent its request to the container first.
        self._release(broken=False, later=True)

    def detach(self, client: Client) -> None:
        """Answer `client` from now on (a Call, once the request has been redirected)."""
        if self._held:
            self.client.hold_body(False)  # the old connection reads its next request again
            self._held = False
        self.client = client
        self.request = self.request.stored()  # the response is kept for clients yet to come
        if self.conn is not None:
            self.conn.resume_reading()
        self._update_hold()

    # -- getting a container -------------------------------------------------------------------
    def _acquired(self, lease: Lease) -> None:
        if self.done:
            lease.release()  # the client left while this request waited for a container
            return
        self.lease = lease
        req = self.request
        if req.websocket:
            lease.long_lived()
        if req.expect_continue and req.has_body and not req.complete and req.body_size == 0:
            self.client.send_continue()
        conn = self.pool.take(lease.socket_path)
        if conn is None:
            self._connect()
        else:
            self._attach(conn)

    def _acquire_failed(self, exc: BaseException) -> None:
        if self.done:
            return
        self._to(Phase.CLOSED)
        self._update_hold()
        if isinstance(exc, TargetUnavailable):
            self.client.respond(exc.status, {"error": exc.message}, exc.headers)
        else:
            logger.error("Target.wait() failed", exc_info=exc)
            self.client.respond(500, {"error": responses.INTERNAL})

    def _connect(self) -> None:
        assert self.lease is not None
        self._to(Phase.CONNECTING)
        task = self._connecting = asyncio.ensure_future(self.pool.connect(self.lease.socket_path))
        task.add_done_callback(self._on_connected)

    def _on_connected(self, task: asyncio.Task[UpstreamConnection]) -> None:
        self._connecting = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not self.done:
                logger.debug("cannot connect to %s: %r", self.lease and self.lease.socket_path, exc)
                self._fail()
            return
        conn = task.result()
        if self.done:
            self.pool.put(conn)  # fresh and unused: the next request can have it
        else:
            self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        self._to(Phase.FORWARDING)
        self.conn = conn
        conn.bind(self)
        payload = b"".join((self._head, *self._pending)) if self._pending else self._head
        self._head = b""
        self._pending = []
        self._pending_size = 0
        if conn.reused and not self._retried:
            self._sent = [payload]
            self._sent_size = len(payload)
        if self.client.write_paused:
            conn.pause_reading()
        conn.write(payload)
        self._update_hold()

    # -- request body --------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        conn = self.conn
        if conn is not None:
            if self._sent is not None:
                self._keep_sent(data)
            conn.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size > PENDING_LIMIT:
            self._update_hold()

    def _keep_sent(self, data: bytes) -> None:
        assert self._sent is not None
        self._sent_size += len(data)
        if self._sent_size > REPLAY_LIMIT:
            self._sent = None  # too much to hold: this request will not be retried
        else:
            self._sent.append(data)

    def upstream_paused(self) -> None:
        self._upstream_full = True
        self._update_hold()

    def upstream_resumed(self) -> None:
        self._upstream_full = False
        self._update_hold()

    def _update_hold(self) -> None:
        hold = not self.done and (self._upstream_full or self._pending_size > PENDING_LIMIT)
        if hold != self._held:
            self._held = hold
            self.client.hold_body(hold)

    # -- response ------------------------------------------------------------------------------
    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        req = self.request
        if status == 101:
            self._switch(reason, headers)
            return
        is_head = req.method == b"HEAD"
        out = client_head(status, reason, headers, head_request=is_head, http11=req.http11,
                          keep_alive=req.keep_alive, request_id=req.request_id)
        self._status = status
        self._framing = out.framing
        self._keep_alive = out.keep_alive
        self._until_eof = out.until_eof
        if (out.framing == CHUNKED or out.until_eof) and self.lease is not None:
            self.lease.long_lived()  # a stream (server-sent events, say): nothing should wait behind it
        self._reusable = keep_alive
        self._sent = None
        self._to(Phase.RESPONDING)
        self._out.append(out.head)
        if is_head:
            # The container may have sent a Content-Length it will not honour with a body;
            # its parser would wait for that body, so this connection is not reused.
            self._reusable = False
            self._finish()

    def _switch(self, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if not self.request.websocket:
            logger.warning("request %s: the container switched protocols unasked", self.request.request_id.decode())
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.close()
            self._fail()
            return
        self._status = 101
        self._to(Phase.SWITCHING)
        self._sent = None
        self._out.append(switching_head(reason, headers, self.request.request_id))

    def upgraded(self, rest: bytes) -> None:
        """The container's 101 has been read; `rest` is what it sent after it (frames)."""
        conn, lease = self.conn, self.lease
        if self.phase is not Phase.SWITCHING or conn is None or lease is None:
            if conn is not None:
                self.conn = None
                conn.close()
            if not self.done:
                self._fail()
            return
        if rest:
            self._out.append(rest)
        self.flush()
        self._to(Phase.ANSWERED)
        self.conn = self.lease = None
        conn.handler = None
        self._update_hold()
        self.client.start_tunnel(conn, lease)

    def response_body(self, data: bytes) -> None:
        if self._framing == CHUNKED:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._out.append(data)

    def flush(self) -> None:
        out = self._out
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def response_complete(self) -> None:
        if not self.done:
            self._finish()

    def upstream_lost(self, exc: BaseException | None) -> None:
        conn, self.conn = self.conn, None
        if self.done:
            return
        self._upstream_full = False  # that connection's buffer is gone with it
        if self.head_sent and self._until_eof and exc is None:
            self._reusable = False
            self._finish()  # a close-delimited body ends with the connection
        elif self._may_retry(conn, exc):
            assert self._sent is not None
            self._head = b"".join(self._sent)
            self._sent = None
            self._retried = True
            self._connect()
        else:
            logger.debug("container connection lost mid-request: %r", exc)
            self._fail()

    def _may_retry(self, conn: UpstreamConnection | None, exc: BaseException | None) -> bool:
        return (
            self._sent is not None
            and conn is not None
            and not conn.received
            and isinstance(exc, _UNREAD)
        )

    # -- endings -------------------------------------------------------------------------------
    def _finish(self) -> None:
        if self._framing == CHUNKED:
            self._out.append(_LAST_CHUNK)
        self.flush()
        self._to(Phase.ANSWERED)
        conn, self.conn = self.conn, None
        if conn is not None:
            if self._reusable and self._body_done:
                self.pool.put(conn)
            else:
                conn.close()
        self._update_hold()
        self._release(broken=False)
        self.client.finish_response(self._keep_alive)

    def _fail(self) -> None:
        self.flush()  # what the container did send reaches the client before the cut
        answered = self.head_sent
        why = self.lease.failure() if self.lease is not None and not answered else None  # a rare path: read now
        self._end()
        self._update_hold()
        self._release(broken=True)
        if answered:
            self.client.break_response()
        else:
            self.client.respond(502, {"error": why or responses.BAD_GATEWAY})

    def _release(self, *, broken: bool, later: bool = False) -> None:
        lease, self.lease = self.lease, None
        if lease is None:
            return
        if later:
            asyncio.get_running_loop().call_soon(_release, lease, broken, self._status)
        else:
            _release(lease, broken, self._status)


def _release(lease: Lease, broken: bool, status: int | None) -> None:
    try:
        lease.release(broken=broken, status=status)
    except Exception:
        logger.exception("Lease.release() failed")

"""Long calls (S7): the 303 redirect chain and the results it leads to.

A request whose response has not started within the redirect window (150 s by default) is
answered `303 See Other`, Location = the same URL plus `__wisp_call_id=<id>`. The call itself
runs on, detached from any client, until the function answers or its timeout passes (then the
answer is a 504). A request carrying `__wisp_call_id` never reaches a container: it attaches to
that call, gets its response, or another 303 after another window.

Once detached, the call's `Exchange` writes into a `Call` instead of a client connection. The
Call keeps the response exactly as the gateway would have sent it (an HTTP/1.1 response, head
and framed body): the first MEMORY_LIMIT bytes in memory, the rest in an unlinked temporary
file. So a large result never sits in the gateway's memory, the container's slot is freed as
soon as the function has answered (no connection is held open waiting for a client to come
back), and any number of clients can read the result, each from the start, following the
writer while the response is still streaming in. A finished call is kept `result_ttl` seconds,
then forgotten; its id is remembered a while longer, so a late client learns "expired" rather
than "unknown".
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Protocol

from . import responses
from ._target import CALL_PARAM, MODAL_CALL_PARAM

if TYPE_CHECKING:
    from ._target import Lease
    from .exchange import Exchange
    from .upstream import UpstreamConnection

logger = logging.getLogger("wisp.gateway")

CALL_PARAMS = (CALL_PARAM, MODAL_CALL_PARAM)  # either names a call when it is fetched
CALL_MARK = b"call_id="  # a cheap substring test (both names end so) before parsing the query
WAIT_PARAM = b"__wisp_wait"  # numbers successive redirects, so no client sees a loop
MEMORY_LIMIT = 64 * 1024  # bytes of one call's response kept in memory; the rest goes to a file
READ_SIZE = 256 * 1024  # bytes handed to a client transport at a time
TOMBSTONES = 100_000  # expired ids remembered at most
_PREFIX = b"fc-"
_HEX = b"0123456789abcdef"
_ID_LENGTH = len(_PREFIX) + 32


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def new_call_id() -> bytes:
    return _PREFIX + secrets.token_hex(16).encode()


def is_call_id(value: bytes) -> bool:
    return len(value) == _ID_LENGTH and value.startswith(_PREFIX) and not value[3:].strip(_HEX)


def call_param(url: bytes) -> bytes | None:
    """The value of `__wisp_call_id` (or Modal's `__modal_function_call_id`) in a request
    target's query, None when it has neither."""
    for part in url.partition(b"?")[2].split(b"&"):
        name, _, value = part.partition(b"=")
        if name in CALL_PARAMS:
            return value
    return None


class Reader(Protocol):
    def pump(self) -> None: ...


class Call:
    """A detached call: the client side of its Exchange, and the store of its response."""

    write_paused = False  # the exchange never has to wait for a Call

    def __init__(self, call_id: bytes, label: str, url: bytes, deadline: float, timeout: float,
                 clock: Callable[[], float], param: bytes = CALL_PARAM) -> None:
        self.id = call_id
        self.param = param  # the query parameter its redirects name it by
        self.label = label
        self.url = url  # the original request target, to build Location from
        self.deadline = deadline
        self.timeout = timeout
        self.exchange: Exchange | None = None
        self.readers: set[Reader] = set()
        self.redirects = 0
        self.head_end = -1  # offset just past the response head; -1 while there is none
        self.size = 0
        self.broken = False  # the response was cut (the container failed mid-response)
        self.finished_at: float | None = None
        self._clock = clock
        self._mem = bytearray()
        self._file: IO[bytes] | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def location(self) -> str:
        """Where the next 303 sends the client: the original URL plus the call id."""
        self.redirects += 1
        url = self.url
        loc = url + (b"&" if b"?" in url else b"?") + self.param + b"=" + self.id
        if self.redirects > 1:
            loc += b"&%s=%d" % (WAIT_PARAM, self.redirects)
        return loc.decode("latin-1")

    # -- what the exchange sees (exchange.Client) ------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.finished:
            return
        if self.head_end < 0:
            # The exchange writes a response head whole, in its first write.
            self.head_end = self.size + data.find(b"\r\n\r\n") + 4
        try:
            self._store(data)
        except OSError as exc:
            logger.error("cannot keep the response of call %s: %r", self.id.decode(), exc)
            self._stop_exchange()
            self.broken = True
            self._finish()
            return
        self._notify()

    def respond(self, status: int, payload: Mapping[str, object], headers: Mapping[str, str] | None = None) -> None:
        self.write(responses.json_response(status, payload, headers=headers))
        self._finish()

    def send_continue(self) -> None:
        pass  # a call is detached only once its request body is complete

    def finish_response(self, keep_alive: bool) -> None:
        self._finish()

    def break_response(self) -> None:
        self.broken = True
        self._finish()

    def hold_body(self, hold: bool) -> None:
        pass

    def start_tunnel(self, conn: UpstreamConnection, lease: Lease) -> None:
        # WebSocket handshakes are never detached; should one get here, nobody is on the line.
        conn.close()
        lease.release()
        self.break_response()

    # -- the gateway's side ----------------------------------------------------------------------
    def time_out(self) -> None:
        """The function's timeout passed: stop the container's work, answer 504 (or cut a
        response that had started but not finished)."""
        self._stop_exchange(504 if self.head_end < 0 else None)
        if self.head_end < 0:
            self.respond(504, responses.timed_out(self.timeout))
        else:
            self.break_response()

    def read(self, offset: int, size: int) -> bytes:
        mem = self._mem
        if offset < len(mem):
            with memoryview(mem) as view:
                return bytes(view[offset: offset + size])
        assert self._file is not None
        return os.pread(self._file.fileno(), size, offset - len(mem))

    def close(self) -> None:
        self._stop_exchange()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = bytearray()

    # -- internals -------------------------------------------------------------------------------
    def _store(self, data: bytes) -> None:
        if self._file is None and len(self._mem) + len(data) <= MEMORY_LIMIT:
            self._mem += data
        else:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="wisp-call-")  # noqa: SIM115 (lives as long as the Call)
            fd = self._file.fileno()
            with memoryview(data) as view:
                while view:
                    view = view[os.write(fd, view):]
        self.size += len(data)

    def _finish(self) -> None:
        if self.finished_at is None:
            self.finished_at = self._clock()
            self.exchange = None
            self._notify()

    def _notify(self) -> None:
        for reader in list(self.readers):
            reader.pump()

    def _stop_exchange(self, status: int | None = None) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.abort(status)


class Fetcher(Protocol):
    """What a CallFetch needs from the client connection it answers."""

    write_paused: bool

    def write(self, data: bytes) -> None: ...
    def finish_response(self, keep_alive: bool) -> None: ...
    def break_response(self) -> None: ...


class CallFetch:
    """A client request attached to a call: sends the call's response as it becomes available.

    Takes the place of an Exchange on the client connection (same callbacks), and is redirected
    again by the gateway's sweep if no response has started within another window.
    """

    __slots__ = ("call", "client", "done", "head_only", "head_sent", "offset", "started")

    def __init__(self, client: Fetcher, call: Call, *, head_only: bool, started: float) -> None:
        self.client = client
        self.call = call
        self.head_only = head_only
        self.offset = 0
        self.started = started
        self.head_sent = False
        self.done = False

    def start(self) -> None:
        self.call.readers.add(self)
        self.pump()

    def pump(self) -> None:
        call, client = self.call, self.client
        if self.done or client.write_paused or call.head_end < 0:
            return
        end = call.head_end if self.head_only else call.size
        while self.offset < end:
            chunk = call.read(self.offset, min(READ_SIZE, end - self.offset))
            self.offset += len(chunk)
            self.head_sent = True
            client.write(chunk)
            if client.write_paused or self.done:
                return  # resumed by client_resumed
        if self.head_only or call.finished:
            self.done = True
            call.readers.discard(self)
            if call.broken and not self.head_only:
                client.break_response()
            else:
                client.finish_response(True)

    def abort(self, status: int | None = None) -> None:
        """The client left, or the server gives up on it; `status` is for the metrics of an
        Exchange's call and means nothing to a fetch (a stored answer has no container)."""
        self.done = True
        self.call.readers.discard(self)

    # -- the client connection's callbacks, as for an Exchange -----------------------------------
    def client_paused(self) -> None:
        pass  # pump stops on its own while client.write_paused

    def client_resumed(self) -> None:
        self.pump()

    def feed_body(self, data: bytes) -> None:
        pass  # a body sent with a fetch has nowhere to go

    def end_body(self) -> None:
        pass


class Calls:
    """The detached calls of one gateway, by id."""

    def __init__(self, result_ttl: float = 600.0, clock: Callable[[], float] | None = None) -> None:
        self.result_ttl = result_ttl
        self._clock = clock or _loop_time
        self._calls: dict[bytes, Call] = {}
        self._expired: dict[bytes, float] = {}  # id -> when it expired, oldest first

    def __len__(self) -> int:
        return len(self._calls)

    def detach(self, exchange: Exchange, label: str, url: bytes) -> Call:
        call = Call(new_call_id(), label, url, exchange.started + exchange.timeout, exchange.timeout, self._clock,
                    exchange.call_param)
        call.exchange = exchange
        self._calls[call.id] = call
        exchange.detach(call)
        return call

    def get(self, call_id: bytes, label: str) -> Call | None:
        call = self._calls.get(call_id)
        return call if call is not None and call.label == label else None

    def missing(self, value: bytes) -> tuple[int, dict[str, object]]:
        """The answer for a call id that names no call here."""
        text = value.decode("latin-1")
        if not is_call_id(value):
            return 400, responses.call_malformed(text)
        if value in self._expired:
            return 404, responses.call_expired(text, self.result_ttl)
        return 404, responses.call_unknown(text)

    def sweep(self, now: float) -> None:
        """Time out calls past their function's timeout; forget results past their keeping time."""
        for call in list(self._calls.values()):
            if not call.finished and now >= call.deadline:
                call.time_out()
            finished_at = call.finished_at
            if finished_at is not None and now - finished_at >= self.result_ttl and not call.readers:
                del self._calls[call.id]
                call.close()
                self._expired[call.id] = now
        expired = self._expired
        while expired and (len(expired) > TOMBSTONES or now - next(iter(expired.values())) > 24 * 3600):
            del expired[next(iter(expired))]

    def close(self) -> None:
        for call in self._calls.values():
            call.close()
        self._calls.clear()

"""Calling functions: `f.remote()`, `f.remote_gen()`, `f.map()`, `f.spawn()` and `FunctionCall`.

Where calls go is the *call context*: inside a container the server puts it in the environment
(WISP_APP, WISP_CALL_URL, WISP_CONTROL_URL, WISP_CALL_TOKEN); in the user's own process
`with stub.run():` (and `wisp run`) sets it. `.remote()` and friends are HTTP requests to the
gateway's route for the function (`/_c-<hash>/`), so they queue, scale and are dispatched like web
requests; `.spawn()` goes to the control API, which keeps the call and its result.
"""
from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import os
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ._call_wire import CONTENT_TYPE, KIND_HEADER, TOKEN_HEADER, FrameReader, decode_frames, encode_input
from ._retries import delay
from ._urls import call_label
from .exception import AuthError, ExecutionError, FunctionTimeoutError, InputCancellation, NotFoundError, RemoteError

MAP_WINDOW = 256  # inputs of one `.map()` in flight at once: memory stays bounded for long inputs
MAP_CONNECTIONS = 32  # threads (each a keep-alive connection) one `.map()` calls with


@dataclass(frozen=True)
class CallContext:
    app_id: str
    call_url: str  # the gateway: http://127.0.0.1:<port>
    control_url: str  # the control API, for spawned calls
    token: str


_context: CallContext | None = None


def set_context(context: CallContext | None) -> None:
    global _context
    _context = context


def current_context() -> CallContext:
    if _context is not None:
        return _context
    env = os.environ
    if env.get("WISP_CALL_TOKEN") and env.get("WISP_APP") and env.get("WISP_CALL_URL"):
        return CallContext(env["WISP_APP"], env["WISP_CALL_URL"], env.get("WISP_CONTROL_URL", ""),
                           env["WISP_CALL_TOKEN"])
    raise ExecutionError(
        "This call needs a running app to run in. Call it inside `with stub.run():`, from a "
        "`@stub.local_entrypoint()` started by `wisp run script.py`, or from another function of a served "
        "or deployed app. To run the function here instead, use `.local(...)`."
    )


# -- HTTP, one keep-alive connection per thread and address -------------------------------------
_local = threading.local()


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: how a sandboxed container, which has no network, reaches the
    server (WISP_CALL_URL=unix:PATH, a socket in its app's own folder)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=None)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _connection(url: str) -> http.client.HTTPConnection:
    conns: dict[str, http.client.HTTPConnection] = _local.__dict__.setdefault("conns", {})
    conn = conns.get(url)
    if conn is None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "unix":
            conn = conns[url] = _UnixConnection(parts.path)
        else:
            conn = conns[url] = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=None)
    return conn


def _request(url: str, method: str, path: str, body: bytes | None, headers: dict[str, str],
             timeout: float | None = None) -> http.client.HTTPResponse:
    """One request; a kept-alive connection the server closed meanwhile is opened again once."""
    for attempt in (1, 2):
        conn = _connection(url)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            return conn.getresponse()
        except (ConnectionError, http.client.HTTPException) as exc:  # closed meanwhile, or left mid-answer
            conn.close()
            if attempt == 2:
                raise ExecutionError(f"The wisp server at {url} did not answer ({exc}). Is it running? "
                                     "`wisp server status` says.") from None
    raise AssertionError("unreachable")


def _error_message(resp: http.client.HTTPResponse, raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip() or resp.reason


class _Retryable(Exception):
    """An attempt that failed in a way `retries=` covers; carries what to raise at the end."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _raise_remote(payload: Any) -> None:
    """Raise a container's exception in the caller, with the remote traceback as its cause."""
    exception = payload.exception
    if exception is None:
        raise RemoteError(f"{payload.summary}\n\nRemote traceback:\n{payload.traceback}")
    if payload.traceback:
        exception.__cause__ = _RemoteTraceback(payload.traceback)
    raise exception


class _RemoteTraceback(Exception):
    """Shown under a re-raised exception: where it was raised, in the container."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nThe remote traceback (in the function's container):\n{self.text}"


def _values(frames: Iterable[tuple[str, Any]]) -> Iterator[Any]:
    """Yield what the frames carry; raise the remote exception where one comes."""
    for kind, payload in frames:
        if kind in ("ok", "item"):
            yield payload
        elif kind == "error":
            if isinstance(payload.exception, (ExecutionError, FunctionTimeoutError, InputCancellation)):
                raise payload.exception  # the server's own verdict: no remote traceback to show
            raise _Retryable(_wrap_remote(payload))
        elif kind == "done":
            return


def _wrap_remote(payload: Any) -> BaseException:
    try:
        _raise_remote(payload)
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable")


# -- the function handle ------------------------------------------------------------------------
class _Variant:
    """A calling form with its `.aio` twin: `f.remote(x)` and `await f.remote.aio(x)`."""

    def __init__(self, sync: Callable[..., Any], aio: Callable[..., Any]) -> None:
        self._sync = sync
        self.aio = aio

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._sync(*args, **kwargs)


class FunctionHandle:
    """What `@stub.function` adds to a function (as attributes: the function itself stays callable)."""

    def __init__(self, fn: Callable[..., Any], name: str, web: bool, retries: dict[str, Any] | None) -> None:
        self._fn = fn
        self.name = name
        self._web = web
        self._retries = retries
        self.is_generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)

    def attach(self) -> None:
        # The user's own function carries its call forms (as Modal's Function does), so the
        # decorator can return it unchanged: `square.remote(2)` and `square(2)` both work.
        forms: dict[str, object] = {
            "local": self.local,
            "remote": _Variant(self.remote, _in_thread(self.remote)),
            "remote_gen": _Variant(self.remote_gen, _gen_in_thread(self.remote_gen)),
            "map": _Variant(self.map, _gen_in_thread(self.map)),
            "starmap": _Variant(self.starmap, _gen_in_thread(self.starmap)),
            "spawn": _Variant(self.spawn, _in_thread(self.spawn)),
            "for_each": _Variant(self.for_each, _in_thread(self.for_each)),
            "object_id": self.name,
        }
        for name, value in forms.items():
            setattr(self._fn, name, value)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def _target(self) -> tuple[CallContext, str]:
        if self._web:
            raise ExecutionError(f"`{self.name}` is a web endpoint: send it an HTTP request at its URL "
                                 "(`wisp app list` shows it) instead of calling `.remote()`.")
        context = current_context()
        return context, f"/{call_label(context.app_id, self.name)}/"

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_generator:
            raise ExecutionError(f"`{self.name}` is a generator function: use `.remote_gen(...)`.")
        context, path = self._target()
        data = encode_input(args, kwargs)
        # The whole answer is read (list), so the keep-alive connection is free for the next call.
        return self._with_retries(lambda: next(iter(list(_values(_call(context, path, data, "remote"))))))

    def remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if not self.is_generator:
            raise ExecutionError(f"`{self.name}` is not a generator function: use `.remote(...)`.")
        context, path = self._target()
        # Items stream as the container yields them; a generator is not retried once it has yielded.
        try:
            yield from _values(_call(context, path, encode_input(args, kwargs), "gen"))
        except _Retryable as failed:
            raise failed.error from failed.error.__cause__

    def _with_retries(self, attempt: Callable[[], Any]) -> Any:
        tries = 0
        while True:
            tries += 1
            try:
                return attempt()
            except _Retryable as failed:
                wait = delay(self._retries, tries)
                if wait is None:
                    raise failed.error from failed.error.__cause__
                time.sleep(wait)

    def map(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None, order_outputs: bool = True,
            return_exceptions: bool = False, wrap_returned_exceptions: bool = True) -> Iterator[Any]:
        """Call the function for each input (zipped from `iterables`), MAP_CONNECTIONS at a time, and
        yield the results as they come (in input order with `order_outputs`)."""
        return self._map(zip(*iterables), kwargs or {}, order_outputs, return_exceptions)

    def starmap(self, input_iterator: Iterable[Iterable[Any]], *, kwargs: dict[str, Any] | None = None,
                order_outputs: bool = True, return_exceptions: bool = False,
                wrap_returned_exceptions: bool = True) -> Iterator[Any]:
        return self._map((tuple(args) for args in input_iterator), kwargs or {}, order_outputs, return_exceptions)

    def for_each(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None,
                 ignore_exceptions: bool = False) -> None:
        for _ in self._map(zip(*iterables), kwargs or {}, False, ignore_exceptions):
            pass

    def _map(self, inputs: Iterator[tuple[Any, ...]], kwargs: dict[str, Any], ordered: bool,
             return_exceptions: bool) -> Iterator[Any]:
        call = self.remote_gen if self.is_generator else self.remote

        def one(args: tuple[Any, ...]) -> Any:
            return list(call(*args, **kwargs)) if self.is_generator else call(*args, **kwargs)

        with ThreadPoolExecutor(MAP_CONNECTIONS, thread_name_prefix=f"wisp-map-{self.name}") as pool:
            for future in _windowed(pool, one, inputs, ordered):
                try:
                    result = future.result()
                except Exception as exc:
                    if not return_exceptions:
                        raise
                    yield exc
                    continue
                if self.is_generator:
                    yield from result
                else:
                    yield result

    def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        context, _ = self._target()
        query = urllib.parse.urlencode({"app": context.app_id, "function": self.name})
        resp = _request(context.control_url, "POST", f"/v1/calls?{query}", encode_input(args, kwargs),
                        {"Authorization": f"Bearer {context.token}", "Content-Type": CONTENT_TYPE})
        raw = resp.read()
        if resp.status != 201:
            _raise_for(resp.status, _error_message(resp, raw))
        return FunctionCall(json.loads(raw)["call_id"], context)


def _windowed(pool: ThreadPoolExecutor, one: Callable[[Any], Any], inputs: Iterator[Any],
              ordered: bool) -> Iterator[Future[Any]]:
    """Submit at most MAP_WINDOW inputs at once and hand back their futures as they may be read."""
    running: deque[Future[Any]] = deque()
    exhausted = False
    while True:
        while not exhausted and len(running) < MAP_WINDOW:
            try:
                args = next(inputs)
            except StopIteration:
                exhausted = True
                break
            running.append(pool.submit(one, args))
        if not running:
            return
        if ordered:
            yield running.popleft()
            continue
        done = next((f for f in running if f.done()), None)
        if done is None:
            from concurrent.futures import FIRST_COMPLETED, wait

            wait(running, return_when=FIRST_COMPLETED)
            done = next(f for f in running if f.done())
        running.remove(done)
        yield done


def _call(context: CallContext, path: str, data: bytes, kind: str) -> Iterator[tuple[str, Any]]:
    """POST one call to the gateway and yield its answer's frames as they arrive."""
    headers = {TOKEN_HEADER: context.token, KIND_HEADER: kind, "Content-Type": CONTENT_TYPE}
    resp = _request(context.call_url, "POST", path, data, headers)
    while resp.status == 303:  # the redirect chain of a long call (S7): wait on for the same call
        location = resp.getheader("Location", "")
        resp.read()
        resp = _request(context.call_url, "GET", urllib.parse.urlsplit(location).path + "?" +
                        urllib.parse.urlsplit(location).query, None, {TOKEN_HEADER: context.token})
    if resp.status != 200:
        raw = resp.read()
        message = _error_message(resp, raw)
        if resp.status in (502, 503):  # a container crashed or could not start: `retries=` covers it
            raise _Retryable(ExecutionError(message))
        _raise_for(resp.status, message)
    reader = FrameReader()
    while chunk := resp.read1(256 * 1024):
        yield from reader.feed(chunk)
    if reader.pending:
        raise _Retryable(ExecutionError("The answer of the call was cut off: its container went away mid-answer."))


def _raise_for(status: int, message: str) -> None:
    if status == 401:
        raise AuthError(message)
    if status == 404:
        raise NotFoundError(message)
    if status == 504:
        raise FunctionTimeoutError(message)
    raise ExecutionError(f"{message} (HTTP {status})")


def _in_thread(sync: Callable[..., Any]) -> Callable[..., Any]:
    async def aio(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(sync, *args, **kwargs)

    return aio


def _gen_in_thread(sync: Callable[..., Iterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    _end = object()

    async def aio(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        iterator = await asyncio.to_thread(lambda: iter(sync(*args, **kwargs)))
        while (item := await asyncio.to_thread(next, iterator, _end)) is not _end:
            yield item

    return aio


# -- spawned calls ------------------------------------------------------------------------------
class FunctionCall:
    """A spawned call: `call = f.spawn(x)`, later `call.get(timeout=...)`, or
    `FunctionCall.from_id(call.object_id).get()` in another request, process or version."""

    def __init__(self, object_id: str, context: CallContext | None = None) -> None:
        self.object_id = object_id
        self._context = context
        self.get = _Variant(self._get, _in_thread(self._get))
        self.cancel = _Variant(self._cancel, _in_thread(self._cancel))

    def __repr__(self) -> str:
        return f"FunctionCall({self.object_id!r})"

    @classmethod
    def from_id(cls, function_call_id: str) -> FunctionCall:
        return cls(function_call_id)

    def _where(self) -> CallContext:
        return self._context or current_context()

    def _get(self, timeout: float | None = None) -> Any:
        """The result; raises TimeoutError if the call has not ended within `timeout` seconds
        (None: wait for it), or the call's own exception."""
        context = self._where()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 50.0 if deadline is None else max(0.0, deadline - time.monotonic())
            resp = _request(context.control_url, "GET", f"/v1/calls/{self.object_id}?timeout={left:.3f}", None,
                            {"Authorization": f"Bearer {context.token}"}, timeout=left + 30)
            raw = resp.read()
            if resp.status == 200:
                try:
                    return next(_values(decode_frames(raw)))
                except _Retryable as failed:  # retries, if any, were the server's to make
                    raise failed.error from failed.error.__cause__
            if resp.status != 202:
                _raise_for(resp.status, _error_message(resp, raw))
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Call {self.object_id} has not finished yet (waited {timeout:g} s).")

    def _cancel(self, terminate_containers: bool = False) -> None:
        context = self._where()
        resp = _request(context.control_url, "DELETE", f"/v1/calls/{self.object_id}", None,
                        {"Authorization": f"Bearer {context.token}"})
        raw = resp.read()
        if resp.status != 200:
            _raise_for(resp.status, _error_message(resp, raw))


__all__ = ["CallContext", "FunctionCall", "FunctionHandle", "current_context", "set_context"]

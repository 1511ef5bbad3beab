"""Spawned calls (`f.spawn()`): durable records the server runs itself, results kept for later.

A call is written to the store before `spawn` returns its id, and its answer when it ends, so a
call and its result outlive a server restart (a call that was running then runs again: at least
once). It runs on whatever version of its app is current when it starts, so an id handed out
before a redeploy is answered after it. Pools are the same as for `.remote()`: a spawned call
queues, scales and is dispatched like any other input.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from .._call_wire import failure_frame, raw_frames
from .._retries import delay
from ..exception import ExecutionError, FunctionTimeoutError, InputCancellation
from .gateway import TargetUnavailable
from .invoke import InvokeBroken, invoke
from .pool import FunctionPool
from .store import CallRow, Store

RESULT_TTL = 24 * 3600.0  # seconds an ended call's answer stays fetchable
LONG_POLL = 50.0  # the most one `get` waits before answering "still pending"
SWAP_PAUSE = 0.05  # a pool that closed under us (a redeploy's swap): look again after this


class Logger(Protocol):
    def __call__(self, app_id: str, line: str) -> None: ...


class SpawnedCalls:
    def __init__(self, store: Store, pool_for: Callable[[str, str], FunctionPool | None], log: Logger,
                 result_ttl: float = RESULT_TTL) -> None:
        self._store = store
        self._pool_for = pool_for  # (app id, function) -> the current version's pool, or None
        self._log = log
        self.result_ttl = result_ttl
        self._ended: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, app_id: str, function: str, data: bytes) -> str:
        call_id = "fc-" + secrets.token_hex(12)
        self._store.add_call(call_id, app_id, function, data)
        self._start(call_id, app_id, function, data)
        return call_id

    def resume(self) -> int:
        """After a restart (apps restored): run again what had not ended."""
        rows = self._store.pending_calls()
        for row in rows:
            self._start(row.id, row.app_id, row.function, row.input or b"")
        return len(rows)

    def _start(self, call_id: str, app_id: str, function: str, data: bytes) -> None:
        self._ended.setdefault(call_id, asyncio.Event())
        task = asyncio.ensure_future(self._run(call_id, app_id, function, data))
        self._tasks[call_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(call_id, None))

    async def _run(self, call_id: str, app_id: str, function: str, data: bytes) -> None:
        while True:
            pool = self._pool_for(app_id, function)
            if pool is None:
                self._end(call_id, "failed", _failure(ExecutionError(
                    f"App {app_id!r} no longer runs a function `{function}` (stopped, or redeployed without it); "
                    "`wisp app list` shows what runs.")))
                return
            if pool.closed:
                await asyncio.sleep(SWAP_PAUSE)
                continue
            attempt = self._store.count_attempt(call_id)
            answer = await self._attempt(pool, data)
            if answer is None:  # the pool closed between lookup and dispatch: not an attempt of the input
                continue
            ok, answer = _outcome(answer, function)
            wait = None if ok else delay(pool.spec.retries, attempt)
            if wait is None:
                self._end(call_id, "done" if ok else "failed", answer)
                return
            self._log(app_id, f"[wisp] call {call_id} of {function} failed (attempt {attempt}); retrying in {wait:g} s")
            await asyncio.sleep(wait)

    async def _attempt(self, pool: FunctionPool, data: bytes) -> bytes | None:
        try:
            lease = await pool.acquire()
        except TargetUnavailable as exc:
            if pool.closed:
                return None
            return _failure(ExecutionError(exc.message))
        try:
            answer = await asyncio.wait_for(invoke(lease.socket_path, data), pool.timeout)
        except InvokeBroken as exc:
            why = lease.failure()  # killed for memory, if it was
            lease.release(broken=True)
            return _failure(ExecutionError(why or f"The container running `{pool.spec.name}` went away mid-call: {exc}. "
                                                  "`wisp app logs` shows its last output."))
        except asyncio.TimeoutError:
            lease.release(broken=True)  # it is still busy with the input: replace it
            return _failure(FunctionTimeoutError(f"`{pool.spec.name}` ran past its timeout of {pool.timeout:g} s."))
        lease.release(status=200)
        return answer

    def _end(self, call_id: str, state: str, answer: bytes) -> None:
        if self._store.finish_call(call_id, state, answer):
            self._ended.setdefault(call_id, asyncio.Event()).set()

    # -- the caller's side -------------------------------------------------------------------
    def find(self, call_id: str) -> CallRow | None:
        return self._store.call(call_id)

    async def wait(self, call_id: str, timeout: float) -> CallRow | None:
        """The call once it has ended, or as it is after `timeout` seconds (at most LONG_POLL)."""
        row = self._store.call(call_id)
        if row is None or row.state != "pending" or timeout <= 0:
            return row
        event = self._ended.setdefault(call_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), min(timeout, LONG_POLL))
        except asyncio.TimeoutError:
            pass
        return self._store.call(call_id)

    def cancel(self, call_id: str) -> None:
        self._end(call_id, "cancelled", _failure(InputCancellation(f"Call {call_id} was cancelled.")))
        task = self._tasks.pop(call_id, None)
        if task is not None:
            task.cancel()

    def expire(self, now: float | None = None) -> None:
        """Forget answers older than the TTL (called from the server's tick)."""
        before = (time.time() if now is None else now) - self.result_ttl
        self._store.expire_calls(before)
        for call_id in [c for c, e in self._ended.items() if e.is_set()]:
            del self._ended[call_id]

    async def close(self) -> None:
        """Server shutdown: stop running calls; they stay pending and run again after a restart."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _failure(exc: Exception) -> bytes:
    return failure_frame(exc, "")


def _outcome(answer: bytes, function: str) -> tuple[bool, bytes]:
    """Whether an answer says the call succeeded, read from its frames' kinds only: the server
    never unpickles what a container wrote. An answer that is not frames is a failure."""
    try:
        frames = raw_frames(answer)
    except ValueError as exc:
        frames, problem = [], str(exc)
    else:
        problem = "it was empty"
    if frames:
        return frames[0].kind == "ok", answer
    return False, _failure(ExecutionError(f"`{function}` answered something that is not a call's answer ({problem})."))

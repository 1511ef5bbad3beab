"""Modal's function calls (`.remote()`, `.map()`, `.spawn()`, `FunctionCall.get()`) as wisp's
spawned calls.

Each input of a Modal function call is one of wisp's spawned calls (`SpawnedCalls`): stored
before it is acknowledged, run through the function's pool, retried per its `retries`, kept
after it ends. A `ModalCall` groups a call's inputs by index and records the order in which
they end, which is what FunctionGetOutputs hands out. The input bytes (Modal's pickled
`(args, kwargs)`) go to the container untouched, and an output's payload comes back untouched:
the server reads only the frame's kind and an error's text (`_call_wire.RawFrame`).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..._call_wire import RawFrame, raw_frames
from ..spawned import SpawnedCalls

# modal_proto's GenericResult.GenericStatus values.
STATUS_SUCCESS = 1
STATUS_FAILURE = 2
STATUS_TIMEOUT = 4
# Failures the server itself reports (a container that died, a timeout, a cancel) are wisp's
# exception classes, which a Modal client cannot unpickle: they travel as text only.
SERVER_MADE = ("ExecutionError", "FunctionTimeoutError", "InputCancellation", "RemoteError")


@dataclass(frozen=True)
class Result:
    """A GenericResult's fields: status, exception text, traceback, pickled data."""

    status: int
    exception: str = ""
    traceback: str = ""
    data: bytes = b""


def result_of(answer: bytes) -> Result:
    """One input's answer (wisp's frames) as Modal's result, from the first frame only."""
    try:
        frames = raw_frames(answer)
    except ValueError as exc:
        return Result(STATUS_FAILURE, f"ExecutionError: the container's answer was not readable ({exc})")
    if not frames:
        return Result(STATUS_FAILURE, "ExecutionError: the container answered nothing")
    return _result(frames[0])


def _result(raw: RawFrame) -> Result:
    if raw.kind == "ok":
        return Result(STATUS_SUCCESS, data=raw.data)
    if raw.kind != "error":
        return Result(STATUS_FAILURE, "ExecutionError: a generator's items cannot be read by Modal's client yet; "
                                      "call it with wisp's client (remote_gen)")
    name = raw.summary.split(":", 1)[0]
    if name == "FunctionTimeoutError":
        return Result(STATUS_TIMEOUT, raw.summary, raw.traceback)
    if name in SERVER_MADE:
        return Result(STATUS_FAILURE, raw.summary, raw.traceback)
    return Result(STATUS_FAILURE, raw.summary, raw.traceback, raw.data)


@dataclass
class ModalCall:
    """A Modal function call: its inputs by index, and the order in which they ended."""

    app_id: str
    function: str
    inputs: dict[int, str] = field(default_factory=dict)  # idx -> wisp call id (Modal's input id)
    ended: list[int] = field(default_factory=list)  # idxs, in the order their outputs were ready
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ModalCalls:
    def __init__(self, spawned: SpawnedCalls) -> None:
        self.spawned = spawned
        self.calls: dict[str, ModalCall] = {}
        self._watchers: set[asyncio.Future[None]] = set()

    def start(self, call_id: str, app_id: str, function: str) -> ModalCall:
        return self.calls.setdefault(call_id, ModalCall(app_id, function))

    def put(self, call_id: str, idx: int, data: bytes) -> str:
        """One input, stored and started; its id (a wisp call id) is Modal's input id."""
        call = self.calls[call_id]
        input_id = call.inputs.get(idx)
        if input_id is None:
            input_id = call.inputs[idx] = self.spawned.spawn(call.app_id, call.function, data)
            watcher = asyncio.ensure_future(self._watch(call, idx, input_id))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
        return input_id

    async def _watch(self, call: ModalCall, idx: int, input_id: str) -> None:
        while True:
            row = await self.spawned.wait(input_id, 3600)
            if row is None or row.state != "pending":
                call.ended.append(idx)
                call.changed.set()
                return

    async def outputs(self, call_id: str, after: int, timeout: float) -> tuple[list[tuple[int, str, Result]], int]:
        """Outputs that ended after the `after`-th one (Modal's last_entry_id; "0-0" and "" are
        0), waiting up to `timeout` for one; and the new `after`."""
        call = self.calls[call_id]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ready = [(n, idx) for n, idx in enumerate(call.ended, 1) if n > after]
            if ready or loop.time() >= deadline:
                break
            call.changed.clear()
            try:
                await asyncio.wait_for(call.changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                pass
        out = []
        for _, idx in ready:
            row = self.spawned.find(call.inputs[idx])
            answer = row.answer if row is not None and row.answer is not None else b""
            out.append((idx, call.inputs[idx], result_of(answer)))
        return out, max([n for n, _ in ready], default=after)

    def unfinished(self, call_id: str) -> int:
        call = self.calls[call_id]
        return len(call.inputs) - len(call.ended)

    def cancel(self, call_id: str) -> None:
        for input_id in self.calls[call_id].inputs.values():
            self.spawned.cancel(input_id)

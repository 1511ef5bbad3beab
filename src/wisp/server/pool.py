"""A function's containers: the activator queue, dispatch, and carrying out `decide()`.

Requests that find no free slot wait in a bounded queue and go to a container the moment one
is ready. The autoscaler's decision (autoscaler.decide) is re-taken when a request queues or
finishes and on every tick; this module only carries it out: start containers, or drain idle
ones (no new requests, SIGTERM, uvicorn finishes what it holds, exit hooks run).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from .._protocol import Log, ProtocolError, Ready, Stopping, decode
from .._spec import FunctionSpec
from .autoscaler import (
    STANDBY_BUDGET,
    Observed,
    ScaleState,
    Settings,
    decide,
    is_failed,
    may_start,
    prestarted,
    standby_slots,
    start_failed,
    start_succeeded,
)
from .dashboard.history import Window, is_empty
from .gateway import TargetUnavailable
from .gateway._target import CALL_PARAM, MODAL_CALL_PARAM
from .logs import AppLog
from .metrics import Labels, Metrics
from .runtime import ContainerProcess, Launcher, NoCapacity

logger = logging.getLogger("wisp.pool")
_ids = itertools.count(1)
STOP_GRACE = 10.0  # seconds a stopping container gets before SIGKILL
NO_ROOM_RETRY = 1.0  # seconds before a start the runtime had no room for is tried again
RECLAIM_AFTER = 0.5  # seconds a container must have been idle before another function may take its room
LAST_OUTPUT = 8  # lines of a failed container's output a failed deploy shows


@dataclass(frozen=True)
class PoolConfig:
    """The activator's settings, the same for every function of a server."""

    max_queue: int = 1000  # requests one function may have waiting; more get 503
    queue_timeout: float = 300.0  # seconds a request may wait for a slot; then 503
    max_containers: int = 64  # when the function sets no concurrency_limit


class State(str, Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(eq=False)
class Container:
    id: str
    socket_path: str
    state: State = State.STARTING
    in_flight: int = 0
    last_active: float = 0.0
    # When it last ended a request, or became busy: when it runs one input at a time, when the
    # one running now began (a request handed ahead starts as the one before it ends).
    progressed: float = 0.0
    long_lived: int = 0  # requests it holds that may last (WebSockets, streams): none is handed ahead to it
    process: ContainerProcess | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=20))


class Waiter:
    """A request queued for a slot (`FunctionPool.wait`). `deliver` is called once, from inside
    the pool's own step that frees or starts a slot, with the lease or the TargetUnavailable that
    ends the wait: no task, no future, and no turn of the loop between a container's response and
    its next request."""

    __slots__ = ("_pool", "deliver", "done", "since")

    def __init__(self, pool: FunctionPool, deliver: Callable[[Lease | TargetUnavailable], None], since: float) -> None:
        self._pool = pool
        self.deliver = deliver
        self.since = since  # loop time when it queued
        self.done = False  # delivered, or withdrawn

    def cancel(self) -> None:
        """Leave the queue (the client left). A slot delivered before is the receiver's to release."""
        if not self.done:
            self.done = True
            self._pool._withdrawn(self)


class Lease:
    __slots__ = ("_container", "_long", "_pool", "_released", "_since", "socket_path")

    def __init__(self, pool: FunctionPool, container: Container, since: float) -> None:
        self._pool = pool
        self._container = container
        self._since = since  # the pool's clock when the slot was handed out
        self.socket_path = container.socket_path
        self._released = False
        self._long = False

    def long_lived(self) -> None:
        if not self._long and not self._released:
            self._long = True
            self._container.long_lived += 1

    def release(self, *, broken: bool = False, status: int | None = None) -> None:
        if not self._released:
            self._released = True
            if self._long:
                self._container.long_lived -= 1
            self._pool._release(self._container, status, broken, self._since)

    def failure(self) -> str | None:
        """Why its container failed the request, when known: killed for memory."""
        process = self._container.process
        why = process.out_of_memory() if process is not None else None
        return None if why is None else (f"The container of `{self._pool.spec.name}` was killed: {why}. "
                                         "Raise the function's memory= (or its limit, memory=(request, limit)).")


class FunctionPool:
    def __init__(self, spec: FunctionSpec, launcher: Launcher, log: AppLog, socket_dir: str, *,
                 config: PoolConfig = PoolConfig(), metrics: Metrics | None = None, labels: Labels = (),
                 clock: Callable[[], float] = time.monotonic,
                 admit: Callable[[list[tuple[bytes, bytes]]], TargetUnavailable | None] | None = None,
                 unplaceable: str | None = None) -> None:
        self.spec = spec
        # Why no container of it can ever start on this machine (a gpu= it does not have): its
        # requests get 503 saying so at once, and it starts nothing. None: it can run here.
        self.unplaceable = unplaceable
        # Who may reach the route (wisp.server.auth): a called function's app, a proxy token's
        # holder; None: public. The gateway runs it before anything starts or queues.
        self.admit = admit
        self.config = config
        self._launcher = launcher
        launcher.prepare()  # a zygote, say, ready before the first request
        self._log = log
        self._socket_dir = socket_dir
        # The redirect chain's name for a detached call: an attribute, read per request by the gateway.
        self.call_param = MODAL_CALL_PARAM if spec.modal_args is not None else CALL_PARAM
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._labels = labels
        self.settings = Settings(
            min_containers=spec.keep_warm,
            max_containers=spec.concurrency_limit or config.max_containers,
            target_per_container=spec.target_inputs or spec.allow_concurrent_inputs,
            buffer_containers=spec.buffer_containers,
            scaledown_window=spec.container_idle_timeout,
        )
        self._scale = ScaleState()
        # Leases held (kept by _lease/_release, so demand is known without visiting every
        # container) and the decision _carry_out() last acted on.
        self._in_flight = 0
        self._desired = -1
        self._containers: list[Container] = []
        self._waiters: deque[Waiter] = deque()  # first come, first served; withdrawn ones are skipped
        self._expiry: asyncio.TimerHandle | None = None  # the oldest waiter's queue timeout (FIFO: it goes first)
        # Standby slots (autoscaler.standby_slots): only where the agent's own gate holds them (not a
        # web_server's server, not Modal's entrypoint, which asks for its inputs itself).
        self._standby_ok = spec.modal_args is None and (spec.web is None or spec.web.kind != "web_server")
        self._duration = 1.0  # moving average of request durations, seconds: long until about 30 short ones
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._retry_scheduled = False
        self.window = Window()  # what happened since the dashboard's last sample (take_window)
        # Pulsed when a request ends or stops waiting, and when a container is ready or gone:
        # drain(), stop() and wait_ready() wait on it rather than polling.
        self._changed = asyncio.Event()
        self.last_error: str | None = None
        self.no_room = False  # the runtime had no room for this function's last start (a full machine or cluster)
        self._no_room_until = 0.0  # loop time before which no start is tried again, unless room comes back
        self._yielded_until = 0.0  # until then (pool clock) it starts containers only for waiting requests
        self.last_output: list[str] = []  # the last lines of the container that failed last (a traceback's end)
        self.oom_kills = 0  # containers the kernel killed for memory (their limit: the function's, `limits.py`)
        self.last_oom: str | None = None
        self.on_wake: Callable[[FunctionPool], None] | None = None  # told when it leaves rest (see `rest`)
        self._rests = False

    # -- the gateway's side: the activator ------------------------------------------------------
    @property
    def timeout(self) -> float:
        """Seconds a call may go without starting its response (the gateway answers 504 past it)."""
        return float(self.spec.timeout)

    @property
    def closed(self) -> bool:
        """Stopping or stopped: it takes no new input (a redeploy replaced it, or its app stopped)."""
        return self._closed

    @property
    def strip_path_prefix(self) -> bool:
        """A web_server's own server knows nothing of the gateway's `/<label>` path prefix."""
        return self.spec.web is not None and self.spec.web.kind == "web_server"

    def try_acquire(self) -> Lease | None:
        """A free slot at once, or None (then `acquire()` waits for one): the warm path, with
        no task and no future."""
        if self._waiters:  # first come, first served
            return None
        container = self._pick()
        return None if container is None else self._lease(container)

    async def acquire(self) -> Lease:
        """`wait` for callers that can await (spawned calls): a future around the waiter."""
        lease = self.try_acquire()
        if lease is not None:
            return lease
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()

        def deliver(outcome: Lease | TargetUnavailable) -> None:
            if future.cancelled():  # the caller left in the meantime: the slot goes back
                if isinstance(outcome, Lease):
                    outcome.release()
            elif isinstance(outcome, Lease):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

        waiter = self.wait(deliver)
        try:
            return await future
        except asyncio.CancelledError:
            waiter.cancel()
            if future.done() and not future.cancelled():  # handed a slot as it was cancelled
                future.result().release()
            raise

    def wait(self, deliver: Callable[[Lease | TargetUnavailable], None]) -> Waiter:
        """Queue for the next free slot; `deliver` gets it, or the TargetUnavailable that ends the
        wait (the queue timeout, a container that cannot start, the function stopped). Raises
        TargetUnavailable at once when waiting could not help. The gateway's path when
        `try_acquire` finds nothing."""
        if self._closed:
            raise self._unavailable(f"`{self.spec.name}` is stopping; retry the request.", retry_after=1)
        if self.unplaceable is not None:
            raise self._unavailable(f"`{self.spec.name}` cannot run on this machine: {self.unplaceable}.")
        if len(self._waiters) >= self.config.max_queue:
            raise self._unavailable(
                f"`{self.spec.name}` already has {len(self._waiters)} requests waiting for a container "
                f"(the queue holds {self.config.max_queue}); retry shortly.", retry_after=1)
        loop = asyncio.get_running_loop()
        waiter = Waiter(self, deliver, loop.time())
        self._wake()
        self._waiters.append(waiter)
        if self._expiry is None:
            self._expiry = loop.call_at(waiter.since + self.config.queue_timeout, self._expire)
        self.autoscale()
        return waiter

    def _withdrawn(self, waiter: Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        self._changed.set()

    def _hand(self, waiter: Waiter, outcome: Lease | TargetUnavailable) -> None:
        """Deliver to a waiter already taken off the queue."""
        waiter.done = True
        try:
            waiter.deliver(outcome)
        except Exception:  # the receiver's bug must not stop the pool's step that handed it out
            logger.exception("a waiter of %s failed to take %r", self.spec.name, outcome)
            if isinstance(outcome, Lease):
                outcome.release()  # at most once: a receiver that kept it and released it changes nothing

    def _expire(self) -> None:
        """Waiters past the queue timeout get a 503; one timer for the oldest, not one per waiter."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._waiters:
            waiter = self._waiters[0]
            if not waiter.done and waiter.since + self.config.queue_timeout > now:
                self._expiry = loop.call_at(waiter.since + self.config.queue_timeout, self._expire)
                return
            self._waiters.popleft()
            if not waiter.done:
                self._hand(waiter, self._unavailable(
                    f"No container for `{self.spec.name}` became free within {self.config.queue_timeout:.0f} s.",
                    retry_after=5))
        self._changed.set()

    def _unavailable(self, message: str, retry_after: int | None = None) -> TargetUnavailable:
        self._metrics.requests.inc((*self._labels, ("status", "503")))
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        return TargetUnavailable(503, message, headers)

    def _pick(self) -> Container | None:
        """The least-loaded ready container with a free slot (an idle one ends the search).

        Standby slots (requests handed ahead, to wait on the agent's gate) only while the function
        cannot grow, and only on a container that holds no WebSocket and ended a request (or
        began its input) within STANDBY_BUDGET: never behind one input that runs long (a
        WebSocket, a stream, a slow call)."""
        inputs = limit = self.spec.allow_concurrent_inputs
        stuck_before = -math.inf
        if self._standby_ok and not self._can_grow():
            limit += standby_slots(self._duration)
            stuck_before = self._clock() - STANDBY_BUDGET
        best = None
        for c in self._containers:
            n = c.in_flight
            if c.state is State.READY and n < limit and (best is None or n < best.in_flight):
                if not n:
                    return c
                if n >= inputs and (c.progressed < stuck_before or c.long_lived):
                    continue
                best = c
        return best

    def _wants_room(self) -> bool:
        """Requests wait for an input: in the queue, or handed ahead to a busy container."""
        ready = sum(1 for c in self._containers if c.state is State.READY)
        return bool(self._waiters) or self._in_flight > ready * self.spec.allow_concurrent_inputs

    def _can_grow(self) -> bool:
        """Whether another container could start now (else waiting requests may take standby slots)."""
        return not self.no_room and len(self._containers) < self.settings.max_containers

    def _lease(self, container: Container) -> Lease:
        container.last_active = now = self._clock()
        if not container.in_flight:
            container.progressed = now
        container.in_flight += 1
        self._in_flight += 1
        return Lease(self, container, now)

    def _release(self, container: Container, status: int | None, broken: bool = False, since: float = 0.0) -> None:
        container.in_flight -= 1
        self._in_flight -= 1
        container.last_active = now = self._clock()
        if status is not None:
            self._metrics.requests.inc_with(self._labels, "status", status)
            window = self.window  # for the dashboard's charts
            window.durations.append(now - since)
            # The average that sizes the standby slots is of running time: a request handed ahead
            # to a one-input container began when the one before it ended, not when it was handed.
            began = max(since, container.progressed) if self.spec.allow_concurrent_inputs == 1 else since
            self._duration += 0.1 * (now - began - self._duration)
            window.statuses[status] = window.statuses.get(status, 0) + 1
        container.progressed = now
        if broken and container.state is State.READY:
            # Its connection broke mid-request: most likely it died, and its exit may not have
            # reached us yet. Never hand it another request; a fresh container replaces it.
            self._log.write(f"[wisp] container {container.id} of {self.spec.name} failed a request; replacing it")
            self._stop(container)
            self.autoscale(finished=1)
        else:
            # The finished request counts once more, so its window starts now: one shorter than
            # the tick would otherwise never be seen. Acting means counting live containers, so
            # it is skipped while the decision stays what was last carried out (the usual case
            # under steady load), unless starts are backing off or requests wait.
            self.autoscale(finished=1, only_if_changed=not (self._scale.failures or self._waiters))
        self._dispatch()
        self._changed.set()

    def _dispatch(self) -> None:
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.done:
                self._waiters.popleft()
                continue
            container = self._pick()
            if container is None:
                return
            self._waiters.popleft()
            waited = asyncio.get_running_loop().time() - waiter.since
            self._metrics.queue_wait.observe(self._labels, waited)
            self.window.waits.append(waited)
            self._hand(waiter, self._lease(container))

    # -- carrying out decide() -------------------------------------------------------------
    def _live(self) -> list[Container]:
        return [c for c in self._containers if c.state in (State.STARTING, State.READY)]

    def live_count(self) -> int:
        return len(self._live())

    def observed(self, finished: int = 0) -> Observed:
        queued = sum(1 for w in self._waiters if not w.done) if self._waiters else 0
        return Observed(in_flight=self._in_flight + finished, queued=queued)

    def autoscale(self, finished: int = 0, *, only_if_changed: bool = False) -> None:
        """Take the decision for now (`autoscaler.decide`, the whole policy) and carry it out."""
        if self._closed:
            return
        desired, self._scale = decide(self.settings, self.observed(finished), self._clock(), self._scale)
        if not only_if_changed or desired != self._desired:
            self._carry_out(desired)

    def _carry_out(self, desired: int) -> None:
        """Start containers up to `desired`, or stop idle ones down to it."""
        self._desired = desired
        live = self._live()
        if desired > len(live):
            self._start_some(desired - len(live))
        elif desired < len(live):
            idle = sorted((c for c in live if c.state is State.READY and c.in_flight == 0), key=lambda c: c.last_active)
            for c in idle[: len(live) - desired]:
                self._log.write(f"[wisp] container {c.id} of {self.spec.name} not needed for "
                                f"{self.settings.scaledown_window:g} s, stopping")
                self._stop(c)

    def _start_some(self, count: int) -> None:
        if self.unplaceable is not None:
            return
        now = self._clock()
        if self.no_room and asyncio.get_running_loop().time() < self._no_room_until:
            return  # the runtime had no room a moment ago: wait for room to come back (or the retry)
        if now < self._yielded_until:  # it gave up room to another function: start only for waiting requests
            starting = sum(1 for c in self._containers if c.state is State.STARTING)
            count = min(count, len(self._waiters) - starting)
            if count <= 0:
                return
        if not may_start(now, self._scale):  # backing off after failed starts
            if not self._retry_scheduled:
                self._retry_scheduled = True
                asyncio.get_running_loop().call_later(self._scale.retry_at - now, self._retry)
            return
        for _ in range(count):
            self._start()

    def _retry(self) -> None:
        self._retry_scheduled = False
        self.autoscale()

    def tick(self) -> None:
        """Called about once a second by the server."""
        self.autoscale()

    def resting(self) -> bool:
        """Scaled to zero with nothing to do: the last decision wanted no container, none runs, no
        request is in flight or waiting, and nothing happened since the charts' last sample. Its
        tick would decide 0 again (`decide` only forgets past peaks) and record an empty second,
        so the server skips both: 2,000 functions scaled to zero cost a tick next to nothing. A
        request wakes it on its own (`acquire` decides at once)."""
        return (self._desired == 0 and not self._containers and not self._in_flight and not self._waiters
                and is_empty(self.window))

    def rest(self) -> None:
        """The server's tick found it `resting()` and stops looking at it: from now on the pool says
        when it wakes (`on_wake`). It can only wake through a request that waits (it has no
        container, so `try_acquire` finds nothing) or a container start; both call `_wake`."""
        self._rests = True

    def _wake(self) -> None:
        if self._rests:
            self._rests = False
            if self.on_wake is not None:
                self.on_wake(self)

    def prestart(self, count: int) -> None:
        """Start containers ahead of requests (a new version replacing a warm one, or proving
        it can start). They count as a demand peak of `count` now, so the first decision after
        the swap keeps them for a scale-down window instead of stopping them as idle."""
        self._scale = prestarted(count, self._clock(), self._scale)
        for _ in range(max(0, count - len(self._live()))):
            self._start()

    async def wait_ready(self, timeout: float, *, or_no_room: bool = False) -> bool:
        """Wait for one ready container; False if none came (all failed, or timed out).
        `or_no_room`: True as well once the runtime has no room for a container now (a full
        cluster), which waiting for would not change (the version it replaces holds the room)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if any(c.state is State.READY for c in self._containers):
                return True
            if self.no_room and or_no_room:
                return True
            if (not self._live() and not self.no_room) or not await self._next_change(deadline):
                return False

    async def _next_change(self, deadline: float) -> bool:
        """Wait for the next change of requests or containers; False if `deadline` (loop time)
        came first."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), deadline - asyncio.get_running_loop().time())
        except asyncio.TimeoutError:
            return False
        return True

    # -- one container's life ----------------------------------------------------------------
    def _start(self) -> None:
        self._wake()
        cid = f"c{next(_ids)}"
        container = Container(id=cid, socket_path=f"{self._socket_dir}/{cid}.sock")
        self._containers.append(container)
        self._spawn(self._run(container))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        self._changed.set()

    async def _run(self, c: Container) -> None:
        started = self._clock()
        try:
            c.process = await self._launcher.start(c.socket_path)
        except NoCapacity as exc:  # no room now (a full machine or cluster): the requests wait, the start is tried again
            self._no_room(c, str(exc))
            if exc.when_free is not None:
                exc.when_free(self._room_came_back)
            if self._wants_room() and exc.make_room is not None:  # requests wait (not a warm-up): ask another function
                exc.make_room(self)
            return
        except Exception as exc:  # could not even exec the interpreter
            c.recent.append(str(exc))
            self._exited(c, -1)
            return
        self.no_room = False
        address = getattr(c.process, "address", None)  # a cluster's container listens on its node: tcp:HOST:PORT
        if address:
            c.socket_path = address
        if c.state is State.DRAINING:  # stopped while its process was being created
            self._spawn(c.process.stop(STOP_GRACE))
        self._log.write(f"[wisp] container {c.id} of {self.spec.name} starting (pid {c.process.pid})")
        if c.process.note:
            self._log.write(f"[wisp] container {c.id}: {c.process.note}")
        timer = asyncio.get_running_loop().call_later(self.spec.startup_timeout, self._startup_timeout, c)
        async for raw in c.process.lines():
            try:
                message = decode(raw)
            except ProtocolError as exc:  # a container of another wisp version, or a garbled line
                message = Log(f"[wisp] {exc}")
            if isinstance(message, Ready):
                timer.cancel()
                self._ready(c, started, message.enter_seconds)
            elif isinstance(message, Stopping):
                self._log.write(f"[wisp] container {c.id} of {self.spec.name} drained; running its exit hooks")
            elif isinstance(message, Log):
                c.recent.append(message.text)
                self._log.write(message.text, source=f"{self.spec.name} {c.id}")
        timer.cancel()
        self._exited(c, await c.process.wait())

    def _no_room(self, c: Container, why: str) -> None:
        self.no_room = True
        self._no_room_until = asyncio.get_running_loop().time() + NO_ROOM_RETRY
        self._containers.remove(c)
        self._dispatch()  # the pool cannot grow: waiting requests may take standby slots
        self._changed.set()
        error = f"no room for another container of {self.spec.name}: {why}"
        if error != self.last_error:
            self._log.write(f"[wisp] {error}")
            self.last_error = error
        if not self._retry_scheduled:
            self._retry_scheduled = True
            asyncio.get_running_loop().call_later(NO_ROOM_RETRY, self._retry)

    def _room_came_back(self) -> None:
        self._no_room_until = 0.0
        if not self._closed:
            asyncio.get_running_loop().call_soon(self.autoscale)

    def _startup_timeout(self, c: Container) -> None:
        if c.state is State.STARTING and c.process is not None:
            c.recent.append(f"the container did not become ready within startup_timeout={self.spec.startup_timeout} s")
            self._spawn(c.process.stop(0))

    def _ready(self, c: Container, started: float, enter_seconds: float | None) -> None:
        if c.state is not State.STARTING:
            return
        c.state = State.READY
        c.last_active = self._clock()
        self._scale = start_succeeded(self._scale)
        self._changed.set()
        took = self._clock() - started
        self._metrics.cold_start.observe(self._labels, took)
        self.window.cold_starts.append(took)
        if enter_seconds is not None:
            self._metrics.enter.observe(self._labels, enter_seconds)
        self._log.write(f"[wisp] container {c.id} of {self.spec.name} ready in {took:.2f} s")
        if self._closed and not self._waiters:
            self._stop(c)
            return
        self._dispatch()

    def _exited(self, c: Container, code: int) -> None:
        with contextlib.suppress(OSError):  # its socket file, now, not when the server stops
            os.unlink(c.socket_path)
        was = c.state
        c.state = State.STOPPED if was is State.DRAINING else State.FAILED
        self._containers.remove(c)
        self._changed.set()
        oom = c.process.out_of_memory() if c.process is not None else None
        if oom is not None:  # the kernel killed it (even one already draining after a broken request): say so
            self.oom_kills += 1
            self.last_oom = oom
            c.recent.append(f"killed: {oom}")
        elif was is State.DRAINING:
            self._log.write(f"[wisp] container {c.id} of {self.spec.name} stopped")
            return
        summary = next((line for line in reversed(c.recent) if line.strip()), f"exit code {code}")
        when = "while starting" if was is State.STARTING else "while serving"
        self.last_error = f"container {c.id} exited {when} (code {code}): {summary}"
        self.last_output = [line for line in c.recent if line.strip()][-LAST_OUTPUT:]
        self._log.write(f"[wisp] {self.last_error}")
        if was is State.STARTING:
            self._scale = start_failed(self._clock(), self._scale)
            self._fail_waiters_without_capacity(summary)
        self.autoscale()  # replace it if it is still wanted

    def _fail_waiters_without_capacity(self, summary: str) -> None:
        """Requests waiting on a container that failed get the reason instead of a hang."""
        if self._live():
            return
        message = (f"The container for `{self.spec.name}` failed to start: {summary}. "
                   "See `wisp app logs` for the whole output.")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done:
                self._metrics.requests.inc((*self._labels, ("status", "503")))
                self._hand(waiter, TargetUnavailable(503, message))

    def _stop(self, c: Container, grace: float | None = None) -> None:
        if c.state in (State.DRAINING, State.STOPPED, State.FAILED):
            return
        c.state = State.DRAINING
        if c.process is not None:  # else _run stops it as soon as it exists
            if grace is None:
                grace = self.spec.timeout if c.in_flight else STOP_GRACE
            self._spawn(c.process.stop(grace))

    # -- shutdown --------------------------------------------------------------------------
    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking new work, let every waiting and running request finish, then stop."""
        self._closed = True
        deadline = asyncio.get_running_loop().time() + (timeout if timeout is not None else self.spec.timeout + STOP_GRACE)
        while self._waiters or any(c.in_flight for c in self._containers):
            if not await self._next_change(deadline):
                break
        await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Stop every container: SIGTERM (uvicorn drains, exit hooks run), SIGKILL after `grace`
        seconds (default: the function's timeout for a busy container, STOP_GRACE for an idle one)."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done:
                self._hand(waiter, TargetUnavailable(503, f"`{self.spec.name}` was stopped.", {"Retry-After": "1"}))
        for c in list(self._containers):
            self._stop(c, grace)
        while self._containers or self._tasks:
            self._changed.clear()
            await self._changed.wait()
        await self._launcher.close()

    def kill(self) -> None:
        """A forced server stop: every container is killed now, exit hooks or not; `stop()`
        (already running, or called next) then returns as soon as they are gone."""
        self._closed = True
        for c in self._containers:
            c.state = State.DRAINING
            if c.process is not None:
                self._spawn(c.process.stop(0))

    async def prepared(self) -> str | None:
        """Wait for what the runtime prepares ahead of the first request (the zygote's import),
        which the launcher bounds by `startup_timeout`; raises NotReady past it. Returns why only
        a ready container can prove this version, or None (Launcher.ready)."""
        return await self._launcher.ready()

    # -- what `wisp app list` and /metrics show ----------------------------------------------
    def stop_container(self, container_id: str, why: str = "from the dashboard") -> bool:
        """Drain one container (an operator's action): it takes no new request, finishes the ones
        it has, runs its exit hooks and stops; the autoscaler starts another if it is still needed."""
        for c in self._containers:
            if c.id == container_id and c.state in (State.STARTING, State.READY):
                self._log.write(f"[wisp] container {c.id} of {self.spec.name} stopped {why}")
                self._stop(c)
                self.autoscale()
                return True
        return False

    def _idle(self) -> list[Container]:
        """Containers beyond the warm pool that have served nothing for RECLAIM_AFTER seconds."""
        if len(self._live()) <= self.settings.min_containers:
            return []
        now = self._clock()
        return [c for c in self._containers
                if c.state is State.READY and not c.in_flight and now - c.last_active >= RECLAIM_AFTER]

    def idlest(self) -> float | None:
        """When this function's idlest container beyond its warm pool last served (its pool's
        clock), or None if it has none to give up."""
        idle = self._idle()
        return min(c.last_active for c in idle) if idle else None

    @property
    def launcher(self) -> Launcher:
        return self._launcher

    def give_up_idle(self, why: str = "the machine's cores are all reserved") -> bool:
        """Stop the idlest container beyond the warm pool, for another function's sake (the
        machine is full); the autoscaler starts one again when this function needs it."""
        idle = self._idle()
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last_active)
        self._yielded_until = self._clock() + self.settings.scaledown_window  # no warm-up taking it back
        self._log.write(f"[wisp] container {victim.id} of {self.spec.name} idle: stopped to make room for another "
                        f"function ({why})")
        self._stop(victim)
        return True

    def containers_on(self, node: str) -> list[str]:
        """The ids of the live containers a cluster placed on `node`."""
        return [c.id for c in self._live() if getattr(getattr(c.process, "node", None), "name", None) == node]

    def take_window(self) -> Window:
        """What happened since the last call (the server samples once a second)."""
        window, self.window = self.window, Window()
        return window

    def container_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self._containers:
            key = "busy" if c.state is State.READY and c.in_flight else c.state.value
            counts[key] = counts.get(key, 0) + 1
        return counts

    @property
    def failed(self) -> bool:
        return is_failed(self._scale)

    def status(self) -> dict[str, object]:
        observed = self.observed()
        return {
            "containers": self.container_states(),
            "container_list": [{"id": c.id, "state": "busy" if c.state is State.READY and c.in_flight else c.state.value,
                                "in_flight": c.in_flight} for c in self._containers],
            "in_flight": observed.in_flight,
            "queued": observed.queued,
            "state": "unplaceable" if self.unplaceable else "failed" if self.failed else "ok",
            "last_error": self.unplaceable or self.last_error,
            "gpu": self.spec.gpu,
            "oom_kills": self.oom_kills,
            "last_oom": self.last_oom,
            "settings": {"min_containers": self.settings.min_containers, "max_containers": self.settings.max_containers,
                         "max_inputs": self.spec.allow_concurrent_inputs, "target_inputs": self.settings.target_per_container,
                         "buffer_containers": self.settings.buffer_containers,
                         "scaledown_window": self.settings.scaledown_window, "timeout": self.spec.timeout},
            "image": {"hash": self.spec.image.hash[:12], "python": self.spec.image.python_version,
                      "steps": [step.call() for step in self.spec.image.steps]},
        }

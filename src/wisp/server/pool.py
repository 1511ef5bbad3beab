"""A function's containers: start on demand, dispatch to the least loaded, stop when idle.

This is the basic autoscaler: a container starts when a request finds no free slot and the
containers already starting cannot take it; idle containers beyond the warm pool stop after the
function's idle timeout; a draining pool finishes what it holds, then stops everything.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from .._runtime.__main__ import READY_MARKER
from .._spec import FunctionSpec
from .gateway import TargetUnavailable
from .logs import AppLog
from .runtime import ContainerProcess

_READY = (READY_MARKER + "\n").encode()
_ids = itertools.count(1)
STOP_GRACE = 10.0  # seconds a stopping container gets before SIGKILL
START_TIMEOUT = 120.0  # a request waits at most this long for a container
MAX_CONTAINERS = 64  # when the function sets no concurrency_limit
FAILURE_BACKOFF = (0.5, 1, 2, 4, 8, 16, 30)


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
    process: ContainerProcess | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=20))


class Lease:
    __slots__ = ("_pool", "_container", "socket_path", "_released")

    def __init__(self, pool: FunctionPool, container: Container) -> None:
        self._pool = pool
        self._container = container
        self.socket_path = container.socket_path
        self._released = False

    def release(self, *, broken: bool = False) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._container)


Launcher = Callable[[Container], Awaitable[ContainerProcess]]


class FunctionPool:
    def __init__(self, spec: FunctionSpec, launch: Launcher, log: AppLog, socket_dir: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._launch = launch
        self._log = log
        self._socket_dir = socket_dir
        self._clock = clock
        self._containers: list[Container] = []
        self._waiters: deque[asyncio.Future[Lease]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._failures = 0
        self._retry_at = 0.0
        self._retry_scheduled = False
        self.last_error: str | None = None

    # -- the gateway's side ------------------------------------------------------------------
    async def acquire(self) -> Lease:
        container = self._pick()
        if container is not None:
            return self._lease(container)
        if self._closed:
            raise TargetUnavailable(503, f"`{self.spec.name}` is stopping; retry the request.", {"Retry-After": "1"})
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._scale_up()
        try:
            done, _ = await asyncio.wait({future}, timeout=START_TIMEOUT)
        except asyncio.CancelledError:
            self._abandon(future)
            raise
        if not done:
            self._abandon(future)
            raise TargetUnavailable(503, f"No container for `{self.spec.name}` became ready in {START_TIMEOUT:.0f} s.")
        return future.result()

    def _abandon(self, future: asyncio.Future[Lease]) -> None:
        """A waiter that gave up must not hold a slot it was handed meanwhile."""
        if future.done() and not future.cancelled() and future.exception() is None:
            future.result().release()
        else:
            future.cancel()
            try:
                self._waiters.remove(future)
            except ValueError:
                pass

    def _pick(self) -> Container | None:
        limit = self.spec.allow_concurrent_inputs
        best = None
        for c in self._containers:
            if c.state is State.READY and c.in_flight < limit and (best is None or c.in_flight < best.in_flight):
                best = c
        return best

    def _lease(self, container: Container) -> Lease:
        container.in_flight += 1
        container.last_active = self._clock()
        return Lease(self, container)

    def _release(self, container: Container) -> None:
        container.in_flight -= 1
        container.last_active = self._clock()
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            container = self._pick()
            if container is None:
                return
            self._waiters.popleft().set_result(self._lease(container))

    # -- scaling -------------------------------------------------------------------------------
    def _live(self) -> list[Container]:
        return [c for c in self._containers if c.state in (State.STARTING, State.READY)]

    def _scale_up(self) -> None:
        """Start enough containers that every waiting request has a slot coming."""
        per = self.spec.allow_concurrent_inputs
        waiting = sum(1 for w in self._waiters if not w.done())
        coming = sum(per for c in self._containers if c.state is State.STARTING)
        limit = self.spec.concurrency_limit or MAX_CONTAINERS
        if self._clock() < self._retry_at:  # backing off after failed starts
            if not self._retry_scheduled:
                self._retry_scheduled = True
                self._later(self._retry_at - self._clock(), self._retry_scale_up)
            return
        need = math.ceil(max(0, waiting - coming) / per)
        for _ in range(min(need, limit - len(self._live()))):
            self._start()

    def prestart(self) -> None:
        """Start one container ahead of the first request (used when a version replaces a warm one)."""
        if not self._live():
            self._start()

    def _retry_scale_up(self) -> None:
        self._retry_scheduled = False
        self._scale_up()

    def ensure_warm(self) -> None:
        """Keep `keep_warm` containers started (S11); they never expire."""
        if self._closed or self._clock() < self._retry_at:
            return
        for _ in range(self.spec.keep_warm - len(self._live())):
            self._start()

    def tick(self) -> None:
        """Called about once a second: stop idle containers, refill the warm pool."""
        now = self._clock()
        idle = [c for c in self._containers if c.state is State.READY and c.in_flight == 0
                and now - c.last_active >= self.spec.container_idle_timeout]
        surplus = len(self._live()) - self.spec.keep_warm
        for c in sorted(idle, key=lambda c: c.last_active)[: max(0, surplus)]:
            self._log.write(f"[wisp] container {c.id} of {self.spec.name} idle for "
                            f"{now - c.last_active:.0f} s, stopping")
            self._stop(c)
        self.ensure_warm()

    def _start(self) -> None:
        cid = f"c{next(_ids)}"
        container = Container(id=cid, socket_path=f"{self._socket_dir}/{cid}.sock")
        self._containers.append(container)
        self._spawn(self._run(container))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, fn)

    async def _run(self, c: Container) -> None:
        started = self._clock()
        try:
            c.process = await self._launch(c)
        except Exception as exc:  # could not even exec the interpreter
            c.recent.append(str(exc))
            self._exited(c, -1, started)
            return
        if c.state is State.DRAINING:  # stopped while its process was being created
            self._spawn(c.process.stop(STOP_GRACE))
        self._log.write(f"[wisp] container {c.id} of {self.spec.name} starting (pid {c.process.pid})")
        async for raw in c.process.lines():
            if raw == _READY:
                self._ready(c, started)
                continue
            line = raw.decode(errors="replace").rstrip("\n")
            c.recent.append(line)
            self._log.write(line, source=f"{self.spec.name} {c.id}")
        self._exited(c, await c.process.wait(), started)

    def _ready(self, c: Container, started: float) -> None:
        if c.state is not State.STARTING:
            return
        c.state = State.READY
        c.last_active = self._clock()
        self._failures = 0
        self._log.write(f"[wisp] container {c.id} of {self.spec.name} ready in {self._clock() - started:.2f} s")
        if self._closed and not self._waiters:
            self._stop(c)
            return
        self._dispatch()

    def _exited(self, c: Container, code: int, started: float) -> None:
        was = c.state
        c.state = State.STOPPED if was is State.DRAINING else State.FAILED
        self._containers.remove(c)
        if was is State.DRAINING:
            self._log.write(f"[wisp] container {c.id} of {self.spec.name} stopped")
            return
        summary = next((line for line in reversed(c.recent) if line.strip()), f"exit code {code}")
        when = "while starting" if was is State.STARTING else "while serving"
        self.last_error = f"container {c.id} exited {when} (code {code}): {summary}"
        self._log.write(f"[wisp] {self.last_error}")
        if was is State.STARTING:
            self._failures += 1
            delay = FAILURE_BACKOFF[min(self._failures, len(FAILURE_BACKOFF)) - 1]
            self._retry_at = self._clock() + delay
            self._fail_waiters_without_capacity(summary)
        if not self._closed:
            self._later(max(0.0, self._retry_at - self._clock()), self.ensure_warm)

    def _fail_waiters_without_capacity(self, summary: str) -> None:
        """Requests waiting on a container that failed get the reason instead of a hang."""
        if any(c.state in (State.STARTING, State.READY) for c in self._containers):
            return
        message = (f"The container for `{self.spec.name}` failed to start: {summary}. "
                   "See `wisp app logs` for the whole output.")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(TargetUnavailable(503, message))

    def _stop(self, c: Container) -> None:
        if c.state in (State.DRAINING, State.STOPPED, State.FAILED):
            return
        c.state = State.DRAINING
        if c.process is not None:  # else _run stops it as soon as it exists
            self._spawn(c.process.stop(STOP_GRACE))

    # -- shutdown --------------------------------------------------------------------------
    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking new work, let every waiting and running request finish, then stop."""
        self._closed = True
        deadline = self._clock() + (timeout if timeout is not None else self.spec.timeout + STOP_GRACE)
        while (self._waiters or any(c.in_flight for c in self._containers)) and self._clock() < deadline:
            await asyncio.sleep(0.05)
        await self.stop()

    async def stop(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(TargetUnavailable(503, f"`{self.spec.name}` was stopped.", {"Retry-After": "1"}))
        for c in list(self._containers):
            self._stop(c)
        while self._containers or self._tasks:
            await asyncio.sleep(0.02)

    def status(self) -> dict[str, object]:
        counts: dict[str, int] = {}
        for c in self._containers:
            key = "busy" if c.state is State.READY and c.in_flight else c.state.value
            counts[key] = counts.get(key, 0) + 1
        return {
            "containers": counts,
            "in_flight": sum(c.in_flight for c in self._containers),
            "queued": sum(1 for w in self._waiters if not w.done()),
            "last_error": self.last_error,
        }

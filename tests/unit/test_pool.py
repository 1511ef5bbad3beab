"""The pool's request path and container lifecycle, through its public methods only: leases,
the scaling decision each finished request feeds, failed starts and their backoff, the startup
timeout, readiness and drain. Containers are fake processes (no interpreter), started through
the pool's own start path; decisions run on a clock the tests move.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from wisp._image import Image
from wisp._protocol import Ready, encode
from wisp._spec import FunctionSpec, WebSpec
from wisp.server.autoscaler import FAILED_AFTER, STANDBY_BUDGET, STANDBY_MAX
from wisp.server.gateway import TargetUnavailable
from wisp.server.logs import AppLog
from wisp.server.metrics import Metrics
from wisp.server.pool import FunctionPool, Lease, PoolConfig
from wisp.server.runtime import NoCapacity

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProcess:
    """A container that says it is ready (unless told not to) and runs until stopped."""

    def __init__(self, ready: bool) -> None:
        self.pid = 4242
        self.note: str | None = None
        self._ready = ready
        self._ended = asyncio.Event()
        self.code = 0
        self.oom: str | None = None  # what the cgroup slot would say once the kernel killed it for memory

    def out_of_memory(self) -> str | None:
        return self.oom

    async def lines(self) -> AsyncIterator[bytes]:
        if self._ready:
            yield encode(Ready(0.001))
        else:
            yield b"Traceback: it will never be ready\n"
        await self._ended.wait()

    async def wait(self) -> int:
        await self._ended.wait()
        return self.code

    async def stop(self, grace: float) -> None:
        self._ended.set()

    def crash(self, code: int = 1) -> None:
        self.code = code
        self._ended.set()


class FakeLauncher:
    def __init__(self, ready: bool = True) -> None:
        self.ready_ = ready
        self.started: list[FakeProcess] = []
        self.full = 0  # starts refused for want of room (a full cluster) before one is let through
        self.refused = 0
        self.asked_for_room: list[object] = []  # pools that asked another function for room (NoCapacity.make_room)

    def prepare(self) -> None:
        pass

    async def ready(self) -> str | None:
        return None

    async def start(self, socket_path: str) -> FakeProcess:
        if self.refused < self.full:
            self.refused += 1
            raise NoCapacity("every node that could take 0.5 CPU is full", make_room=self._make_room)
        process = FakeProcess(self.ready_)
        self.started.append(process)
        return process

    async def close(self) -> None:
        pass

    def _make_room(self, asking: object) -> bool:
        self.asked_for_room.append(asking)
        return False


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AppLog]:
    log = AppLog(tmp_path / "log")
    yield log
    log.close()


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(body(), 30))


def make_pool(log: AppLog, clock: Clock, launcher: FakeLauncher, *, max_inputs: int = 1,
              startup_timeout: int = 300, keep_warm: int = 0) -> FunctionPool:
    spec = FunctionSpec(name="f", image=Image.debian_slim().spec, web=WebSpec("webhook"), container_idle_timeout=10,
                        allow_concurrent_inputs=max_inputs, startup_timeout=startup_timeout, keep_warm=keep_warm)
    return FunctionPool(spec, launcher, log, "/nonexistent",  # type: ignore[arg-type]  # a fake launcher
                        metrics=Metrics(), labels=(("function", "f"),), clock=clock)


async def started(pool: FunctionPool, count: int) -> None:
    pool.prestart(count)
    for _ in range(200):
        if pool.container_states().get("ready", 0) == count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(pool.container_states())


async def scaled_to_zero(pool: FunctionPool, clock: Clock) -> None:
    """Past the scale-down window, a tick stops every idle container; wait until they are gone."""
    clock.now += 11
    pool.tick()
    for _ in range(200):
        if not pool.container_states():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(pool.container_states())


def ready(pool: FunctionPool) -> int:
    states = pool.container_states()
    return states.get("ready", 0) + states.get("busy", 0)


def test_try_acquire_hands_out_the_least_loaded_slot_and_none_when_full(log: AppLog) -> None:
    async def body() -> None:
        pool = make_pool(log, Clock(), FakeLauncher(), max_inputs=2)
        await started(pool, 2)
        leases = [pool.try_acquire() for _ in range(4)]
        assert all(lease is not None for lease in leases)
        assert pool.container_states() == {"busy": 2}
        assert pool.try_acquire() is None
        assert pool.observed().in_flight == 4
        for lease in leases:
            assert lease is not None
            lease.release(status=200)
            lease.release(status=200)  # a second release is ignored
        assert pool.observed().in_flight == 0
        assert pool._metrics.requests.values == {(("function", "f"), ("status", "200")): 4.0}
        await pool.stop()
    run(body)


def test_a_request_shorter_than_the_tick_holds_its_container_for_the_window(log: AppLog) -> None:
    async def body() -> None:
        clock = Clock()
        pool = make_pool(log, clock, FakeLauncher())
        await started(pool, 2)
        clock.now += 11  # the prestart's own peak has passed
        first, second = pool.try_acquire(), pool.try_acquire()
        assert first is not None and second is not None
        clock.now += 0.2  # both answered between two ticks
        first.release(status=200)
        second.release(status=200)
        for _ in range(9):  # ticks inside the window keep both
            clock.now += 1
            pool.tick()
            assert ready(pool) == 2
        clock.now += 1.5  # the window since the release has passed
        pool.tick()
        assert ready(pool) == 0
        await pool.stop()
    run(body)


def test_a_release_after_the_window_stops_idle_containers_at_once(log: AppLog) -> None:
    async def body() -> None:
        clock = Clock()
        pool = make_pool(log, clock, FakeLauncher())
        await started(pool, 3)
        leases = [pool.try_acquire() for _ in range(3)]
        for lease in leases:
            assert lease is not None
            lease.release(status=200)
        clock.now += 11  # no tick came meanwhile
        lease = pool.try_acquire()
        assert lease is not None
        lease.release(status=200)  # the decision moved from 3 to 1: the two idle ones stop now
        assert ready(pool) == 1
        await pool.stop()
    run(body)


def test_a_broken_request_is_counted_with_its_status(log: AppLog) -> None:
    async def body() -> None:
        pool = make_pool(log, Clock(), FakeLauncher(), max_inputs=4)
        await started(pool, 2)
        lease = pool.try_acquire()
        assert lease is not None
        lease.release(broken=True, status=502)
        assert ready(pool) == 1  # that container takes no more requests
        assert pool._metrics.requests.values == {(("function", "f"), ("status", "502")): 1.0}
        await pool.stop()
    run(body)


def test_failed_starts_back_off_and_mark_the_function_failed(log: AppLog) -> None:
    async def body() -> None:
        clock = Clock()
        launcher = FakeLauncher(ready=False)
        pool = make_pool(log, clock, launcher, keep_warm=1)  # always wanted: restarted after each failure
        pool.prestart(1)
        for n in range(1, FAILED_AFTER + 1):
            while len(launcher.started) < n:
                await asyncio.sleep(0.005)
            if n == FAILED_AFTER:
                launcher.ready_ = True  # the next start works
            launcher.started[-1].crash()  # it dies while starting
            await asyncio.sleep(0.02)
            assert pool.failed is (n >= FAILED_AFTER), n
            pool.autoscale()
            assert len(launcher.started) == n  # backing off: no start before the delay
            clock.now += 60  # past any backoff
            pool.autoscale()
        assert pool.status()["state"] == "failed" and "exited while starting" in str(pool.status()["last_error"])
        while len(launcher.started) < FAILED_AFTER + 1:
            await asyncio.sleep(0.005)
        assert await pool.wait_ready(5)  # this one comes up: the function works again
        assert not pool.failed
        await pool.stop()
    run(body)


def test_a_request_waits_while_the_runtime_has_no_room_and_is_served_when_it_has(log: AppLog) -> None:
    async def body() -> None:
        launcher = FakeLauncher()
        launcher.full = 2  # the cluster is full for two tries (a second apart), then a node frees up
        pool = make_pool(log, Clock(), launcher)
        lease = await asyncio.wait_for(pool.acquire(), 10)  # waits: not a 503, not a failed start
        assert launcher.refused == 2 and len(launcher.started) == 1
        assert not pool.failed and "no room for another container of f" in str(pool.status()["last_error"])
        lease.release()
        await pool.stop()
    run(body)


def test_a_container_that_is_not_ready_within_startup_timeout_is_stopped(log: AppLog) -> None:
    async def body() -> None:
        pool = make_pool(log, Clock(), FakeLauncher(ready=False), startup_timeout=0)
        pool.prestart(1)
        assert not await pool.wait_ready(5)  # stopped, and counted as a failed start
        assert "did not become ready within startup_timeout=0 s" in str(pool.status()["last_error"])
        assert pool.container_states() == {}
        await pool.stop()
    run(body)


def test_wait_ready_and_drain_wait_on_events(log: AppLog) -> None:
    async def body() -> None:
        pool = make_pool(log, Clock(), FakeLauncher())
        pool.prestart(1)
        assert await pool.wait_ready(5)
        lease = pool.try_acquire()
        assert lease is not None
        draining = asyncio.ensure_future(pool.drain(timeout=20))
        await asyncio.sleep(0.05)
        assert not draining.done()  # a request is in flight: the drain waits for it
        loop = asyncio.get_running_loop()
        released_at = loop.time()
        lease.release(status=200)
        await draining
        assert loop.time() - released_at < 5  # woken by the release, not by the 20 s bound
        assert pool.container_states() == {}
    run(body)


async def one_container_and_no_room(pool: FunctionPool, launcher: FakeLauncher, clock: Clock,
                                    seconds: float) -> None:
    """One ready container, every further start refused; 100 requests of `seconds` each so far
    (the moving average of their durations has forgotten where it started)."""
    await started(pool, 1)
    launcher.full = 10**6
    for _ in range(100):
        lease = pool.try_acquire()
        assert lease is not None
        clock.now += seconds
        lease.release(status=200)


async def refused_once(pool: FunctionPool) -> None:
    """A request beyond the container asks for a start, which the runtime refuses: no room now."""
    held = pool.try_acquire()
    assert held is not None
    waiting = asyncio.ensure_future(pool.acquire())
    for _ in range(20):
        await asyncio.sleep(0)
    assert pool.no_room
    held.release(status=200)
    (await asyncio.wait_for(waiting, 5)).release(status=200)


async def no_room_yet(log: AppLog, seconds: float) -> tuple[FunctionPool, Clock, FakeLauncher]:
    """A pool of one container whose requests took `seconds` each, after a start refused for room."""
    clock, launcher = Clock(), FakeLauncher()
    pool = make_pool(log, clock, launcher)
    await one_container_and_no_room(pool, launcher, clock, seconds)
    await refused_once(pool)
    return pool, clock, launcher


@pytest.mark.parametrize(("seconds", "ahead"), [(0.001, STANDBY_MAX), (0.02, 2), (0.03, 1), (1.0, 0)])
def test_requests_go_ahead_to_a_busy_container_as_many_as_fit_the_budget_and_only_when_none_can_start(
        log: AppLog, seconds: float, ahead: int) -> None:
    async def body() -> None:
        clock, launcher = Clock(), FakeLauncher()
        pool = make_pool(log, clock, launcher)
        await one_container_and_no_room(pool, launcher, clock, seconds)
        busy = pool.try_acquire()
        assert busy is not None
        waiting = [asyncio.ensure_future(pool.acquire()) for _ in range(STANDBY_MAX + 1)]
        for _ in range(20):  # the start they ask for is refused: no room
            await asyncio.sleep(0)
        assert pool.no_room
        assert [w.done() for w in waiting] == [True] * ahead + [False] * (len(waiting) - ahead)
        assert pool.try_acquire() is None  # a newcomer queues behind the waiting ones
        for handed in waiting[:ahead]:
            assert handed.result().socket_path == busy.socket_path
            handed.result().release(status=200)
        busy.release(status=200)
        await asyncio.wait_for(waiting[ahead], 5)
        for w in waiting[ahead + 1:]:
            w.cancel()
        await pool.stop()
    run(body)


def test_a_waiting_request_gets_its_slot_inside_the_release_that_frees_it_and_a_withdrawn_one_never(
        log: AppLog) -> None:
    """No task, no future, no turn of the loop between a response and the next request's slot."""
    async def body() -> None:
        clock, launcher = Clock(), FakeLauncher()
        pool = make_pool(log, clock, launcher)
        await one_container_and_no_room(pool, launcher, clock, 1.0)  # long requests: none goes ahead
        busy = pool.try_acquire()
        assert busy is not None
        got: list[Lease | TargetUnavailable] = []
        gone, stays = pool.wait(got.append), pool.wait(got.append)
        await asyncio.sleep(0)
        assert got == []
        gone.cancel()  # its client left
        assert pool.observed().queued == 1
        busy.release(status=200)
        assert len(got) == 1 and isinstance(got[0], Lease)  # no await in between
        assert got[0].socket_path == busy.socket_path and pool.observed().queued == 0
        got[0].release(status=200)
        assert len(got) == 1
        stays.cancel()  # delivered already: nothing happens
        await pool.stop()
    run(body)


def test_no_request_goes_ahead_to_a_container_whose_input_runs_long(log: AppLog) -> None:
    """A WebSocket, a stream or one slow call among short requests: nothing waits behind it."""
    async def body() -> None:
        clock, launcher = Clock(), FakeLauncher()
        pool = make_pool(log, clock, launcher)
        await one_container_and_no_room(pool, launcher, clock, 0.001)
        long = pool.try_acquire()
        assert long is not None
        clock.now += STANDBY_BUDGET * 1.2
        assert pool.try_acquire() is None
        waiting = asyncio.ensure_future(pool.acquire())
        for _ in range(20):
            await asyncio.sleep(0)
        assert pool.no_room and not waiting.done()
        long.release(status=200)
        lease = await asyncio.wait_for(waiting, 5)
        assert lease.socket_path == long.socket_path
        lease.release(status=200)
        await pool.stop()
    run(body)


def test_no_request_goes_ahead_to_a_container_holding_a_websocket(log: AppLog) -> None:
    async def body() -> None:
        pool, _, _ = await no_room_yet(log, 0.001)
        socket = pool.try_acquire()
        assert socket is not None
        socket.long_lived()  # the gateway says so as the lease arrives
        assert pool.try_acquire() is None  # within the budget, and still none ahead
        socket.release(status=101)
        ahead = [pool.try_acquire() for _ in range(2)]
        assert all(ahead)  # once it closed, requests go ahead again
        for lease in ahead:
            assert lease is not None
            lease.release(status=200)
        await pool.stop()
    run(body)


def test_requests_handed_ahead_count_their_running_time_not_their_wait(log: AppLog) -> None:
    """Requests of 15 ms: 3 fit the budget. Timed from when they were handed, the ones ahead
    would average 37.5 ms, and the slots would shrink to 1."""
    async def body() -> None:
        pool, clock, _ = await no_room_yet(log, 0.015)
        for _ in range(50):
            leases = [pool.try_acquire() for _ in range(STANDBY_MAX + 2)]
            assert [lease is not None for lease in leases] == [True] * (1 + STANDBY_MAX) + [False]
            for lease in leases[:-1]:
                assert lease is not None
                clock.now += 0.015  # each runs once the one before it has ended
                lease.release(status=200)
        await pool.stop()
    run(body)


def test_requests_ahead_in_busy_containers_ask_another_function_for_room(log: AppLog) -> None:
    async def body() -> None:
        pool, _, launcher = await no_room_yet(log, 0.001)
        busy, ahead = pool.try_acquire(), pool.try_acquire()  # the queue stays empty
        assert busy is not None and ahead is not None
        launcher.asked_for_room.clear()
        for _ in range(300):  # the retry after the last refusal (NO_ROOM_RETRY) asks for a second container
            if launcher.asked_for_room:
                break
            await asyncio.sleep(0.01)
        assert launcher.asked_for_room[:1] == [pool]
        busy.release(status=200)
        ahead.release(status=200)
        await pool.stop()
    run(body)


def test_requests_waiting_past_the_queue_timeout_get_a_503_oldest_first(log: AppLog) -> None:
    async def body() -> None:
        launcher = FakeLauncher()
        launcher.full = 10**6  # nothing ever starts
        spec = FunctionSpec(name="f", image=Image.debian_slim().spec, web=WebSpec("webhook"))
        pool = FunctionPool(spec, launcher, log, "/nonexistent",  # type: ignore[arg-type]  # a fake launcher
                            config=PoolConfig(queue_timeout=0.2), metrics=Metrics(), clock=Clock())
        first = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(pool.acquire())
        await asyncio.wait({first}, timeout=5)
        assert not second.done()
        with pytest.raises(TargetUnavailable, match="became free within"):
            first.result()
        with pytest.raises(TargetUnavailable):
            await asyncio.wait_for(second, 5)
        await pool.stop()
    run(body)


def test_a_container_killed_for_memory_is_named_in_its_502_its_log_and_its_status(log: AppLog) -> None:
    """The gateway sees the broken connection first (`Lease.failure` gives its 502 the reason),
    the exit comes after: counted even though the broken request already set it draining."""
    async def body() -> None:
        launcher = FakeLauncher()
        pool = make_pool(log, Clock(), launcher)
        await started(pool, 1)
        lease = pool.try_acquire()
        assert lease is not None and lease.failure() is None  # alive, nothing to say
        victim = launcher.started[0]
        victim.oom = "out of memory (limit 160 MiB)"
        assert lease.failure() == ("The container of `f` was killed: out of memory (limit 160 MiB). "
                                   "Raise the function's memory= (or its limit, memory=(request, limit)).")
        lease.release(broken=True, status=502)
        victim.crash(-9)
        while pool.status()["oom_kills"] != 1:
            await asyncio.sleep(0.005)
        status = pool.status()
        assert status["last_oom"] == "out of memory (limit 160 MiB)"
        assert "exited while serving (code -9): killed: out of memory (limit 160 MiB)" in str(status["last_error"])
        await started(pool, 1)  # replaced, as after any crash
        assert len(launcher.started) == 2 and not pool.failed
        await pool.stop()
        assert "killed: out of memory (limit 160 MiB)" in log.path.read_text()
    run(body)


def test_a_pool_scaled_to_zero_with_nothing_to_do_is_resting_until_a_request_comes(log: AppLog) -> None:
    async def body() -> None:
        clock = Clock()
        pool = make_pool(log, clock, FakeLauncher())
        assert not pool.resting()  # no decision taken yet
        await started(pool, 1)
        assert not pool.resting()  # a container runs
        await scaled_to_zero(pool, clock)
        assert not pool.resting()  # the charts have not sampled its cold start yet
        pool.take_window()
        assert pool.resting()
        waiting = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        assert not pool.resting()  # a request woke it: a container starts
        lease = await waiting
        assert not pool.resting()
        lease.release(status=200)
        await pool.stop()
    run(body)


def test_a_warm_pool_never_rests(log: AppLog) -> None:
    async def body() -> None:
        clock = Clock()
        pool = make_pool(log, clock, FakeLauncher(), keep_warm=1)
        await started(pool, 1)
        clock.now += 60
        pool.tick()
        pool.take_window()
        assert not pool.resting()
        await pool.stop()
    run(body)


def test_a_resting_pool_says_when_a_request_wakes_it_once(log: AppLog) -> None:
    async def body() -> None:
        clock = Clock()
        pool = make_pool(log, clock, FakeLauncher())
        woken: list[FunctionPool] = []
        pool.on_wake = woken.append
        pool.autoscale()  # nothing wanted: it decides 0
        assert pool.resting()
        lease = await pool.acquire()  # not resting: no word (the server still looks at it)
        assert woken == []
        lease.release(status=200)
        await scaled_to_zero(pool, clock)
        pool.take_window()
        assert pool.resting()
        pool.rest()  # the server stops looking at it
        lease = await pool.acquire()  # a request waits, a container starts: one word
        assert woken == [pool]
        lease.release(status=200)
        await pool.stop()
    run(body)

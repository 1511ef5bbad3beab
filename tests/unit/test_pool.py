"""The pool's request path: leases, and the scaling decision each finished request feeds.

Containers are placed in the pool already ready (no processes), on a clock the tests move.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wisp._image import Image
from wisp._spec import FunctionSpec, WebSpec
from wisp.server.logs import AppLog
from wisp.server.metrics import Metrics
from wisp.server.pool import Container, FunctionPool, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoLauncher:
    """These tests never start a container: the pool is given ready ones."""

    def prepare(self) -> None:
        pass


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AppLog]:
    log = AppLog(tmp_path / "log")
    yield log
    log.close()


def make_pool(log: AppLog, clock: Clock, containers: int, *, max_inputs: int = 1) -> FunctionPool:
    spec = FunctionSpec(name="f", image=Image.debian_slim().spec, web=WebSpec("webhook"),
                        container_idle_timeout=10, allow_concurrent_inputs=max_inputs)
    pool = FunctionPool(spec, NoLauncher(), log, "/nonexistent",  # type: ignore[arg-type]
                        metrics=Metrics(), labels=(("function", "f"),), clock=clock)
    for i in range(containers):
        pool._containers.append(Container(id=f"c{i}", socket_path=f"/nonexistent/c{i}.sock", state=State.READY))
    return pool


def ready(pool: FunctionPool) -> int:
    return sum(c.state is State.READY for c in pool._containers)


def test_try_acquire_hands_out_the_least_loaded_slot_and_none_when_full(log: AppLog) -> None:
    pool = make_pool(log, Clock(), 2, max_inputs=2)
    leases = [pool.try_acquire() for _ in range(4)]
    assert all(lease is not None for lease in leases)
    assert sorted(c.in_flight for c in pool._containers) == [2, 2]
    assert pool.try_acquire() is None
    assert pool.observed().in_flight == 4
    for lease in leases:
        assert lease is not None
        lease.release(status=200)
        lease.release(status=200)  # a second release is ignored
    assert pool.observed().in_flight == 0
    assert pool._metrics.requests.values == {(("function", "f"), ("status", "200")): 4.0}


def test_a_request_shorter_than_the_tick_holds_its_container_for_the_window(log: AppLog) -> None:
    clock = Clock()
    pool = make_pool(log, clock, 2)
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


def test_a_release_after_the_window_stops_idle_containers_at_once(log: AppLog) -> None:
    clock = Clock()
    pool = make_pool(log, clock, 3)
    leases = [pool.try_acquire() for _ in range(3)]
    for lease in leases:
        assert lease is not None
        lease.release(status=200)
    clock.now += 11  # no tick came meanwhile
    lease = pool.try_acquire()
    assert lease is not None
    lease.release(status=200)  # the decision moved from 3 to 1: the two idle ones stop now
    assert ready(pool) == 1


def test_a_broken_request_is_counted_with_its_status(log: AppLog) -> None:
    pool = make_pool(log, Clock(), 2, max_inputs=4)
    lease = pool.try_acquire()
    assert lease is not None
    lease.release(broken=True, status=502)
    assert ready(pool) == 1  # that container takes no more requests
    assert pool._metrics.requests.values == {(("function", "f"), ("status", "502")): 1.0}

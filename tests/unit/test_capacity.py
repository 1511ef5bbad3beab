"""This machine's capacity (issue 15, point 3): running containers' reservations never exceed its
cores; a start past them waits (NoCapacity), one that could never fit fails saying why."""
from __future__ import annotations

import asyncio

import pytest

from wisp.server.runtime import NoCapacity
from wisp.server.runtime.capacity import Capacity, CappedLauncher, cpu_limit
from wisp.server.runtime.cluster.placement import Need
from wisp.server.runtime.gpus import NO_GPUS, Grant


@pytest.mark.parametrize(("environ", "cores", "limit"), [
    ({}, 2, 2.0),
    ({"WISP_CPU_LIMIT": ""}, 8, 8.0),
    ({"WISP_CPU_LIMIT": "1.5"}, 2, 1.5),
    ({"WISP_CPU_LIMIT": "16"}, 2, 16.0),
])
def test_the_cores_containers_may_reserve(environ: dict[str, str], cores: int, limit: float) -> None:
    assert cpu_limit(environ, cores) == limit


@pytest.mark.parametrize("raw", ["0", "-1", "many", "nan"])
def test_a_bad_cpu_limit_says_what_to_give(raw: str) -> None:
    with pytest.raises(ValueError, match="WISP_CPU_LIMIT=.*number of cores above 0"):
        cpu_limit({"WISP_CPU_LIMIT": raw}, 2)


def test_reservations_stop_at_the_machine_s_cores_and_come_back() -> None:
    capacity = Capacity(2.0, 4096)
    default = Need()  # 0.125 CPU, 128 MiB
    for _ in range(16):
        capacity.take(default)
    with pytest.raises(NoCapacity, match="is full"):
        capacity.take(default)
    capacity.give_back(default)
    capacity.take(default)
    assert capacity.containers == 16 and capacity.reserved.cpu == 2.0


def test_memory_counts_too_and_a_function_that_never_fits_fails() -> None:
    capacity = Capacity(4.0, 1024)
    capacity.take(Need(0.5, 1000, 0))
    with pytest.raises(NoCapacity):
        capacity.take(Need(0.5, 100, 0))
    with pytest.raises(RuntimeError, match="more than any node has.*WISP_CPU_LIMIT"):
        capacity.take(Need(8.0, 1, 0))


class Process:
    pid = 7
    note = None

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def lines(self):  # type: ignore[no-untyped-def]  # an async generator, as a container's
        await self.ended.wait()
        yield b""

    async def wait(self) -> int:
        await self.ended.wait()
        return 0

    async def stop(self, grace: float) -> None:
        self.ended.set()

    def out_of_memory(self) -> str | None:
        return None


class Inner:
    def __init__(self) -> None:
        self.fail = False

    def prepare(self) -> None:
        pass

    async def ready(self) -> str | None:
        return None

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> Process:
        if self.fail:
            raise OSError("no interpreter")
        return Process()

    async def close(self) -> None:
        pass


def test_a_container_holds_its_reservation_until_it_has_exited() -> None:
    async def body() -> None:
        capacity = Capacity(1.0, 4096)
        inner = Inner()
        launcher = CappedLauncher(inner, capacity, Need(0.5, 128, 0))  # type: ignore[arg-type]  # a fake inner launcher
        first = await launcher.start("/a")
        await launcher.start("/b")
        with pytest.raises(NoCapacity):
            await launcher.start("/c")
        await first.stop(0)
        await first.wait()
        assert capacity.reserved.cpu == 0.5
        inner.fail = True
        with pytest.raises(OSError):
            await launcher.start("/d")  # a start that fails gives its reservation back
        assert capacity.reserved.cpu == 0.5 and capacity.containers == 1
    asyncio.run(body())

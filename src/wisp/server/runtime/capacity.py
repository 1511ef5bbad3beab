"""This machine's capacity, as containers reserve it (issue 15, point 3): the local runtimes'
placement rule. A container reserves its function's `cpu=` and `memory=` (Modal's defaults when
unset) for its life; the reservations of running containers never exceed the machine's cores
(`WISP_CPU_LIMIT`, default all of them) and memory. A start beyond that raises `NoCapacity`, so
the pool keeps its requests waiting for a container instead of starting more than the machine
can run; a function that could never fit fails its start, saying why. The rule is
`cluster.placement`'s, on one node.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping

from .base import ContainerProcess, Launcher, NoCapacity
from .cluster.placement import NOTHING, Need, NodeView, place

CPU_LIMIT_ENV = "WISP_CPU_LIMIT"


def machine_memory_mb() -> int:
    """MemTotal of /proc/meminfo; 0 where that is not to be had (no memory rule then)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def positive_setting(environ: Mapping[str, str], name: str, kind: type[int] | type[float], what: str,
                     unset: str) -> float | None:
    """A setting that must be a number above 0: its value, None when unset, or ValueError saying
    what it should be (`what`: "a number of cores") and what unsetting it does (`unset`)."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not value > 0:
        raise ValueError(f"{name}={raw!r} is not {what} above 0; give one, or unset it {unset}")
    return value


def cpu_limit(environ: Mapping[str, str], cores: int) -> float:
    """The cores containers may reserve together: WISP_CPU_LIMIT, else every core."""
    value = positive_setting(environ, CPU_LIMIT_ENV, float, "a number of cores",
                             f"to let containers reserve every core (this machine has {cores})")
    return float(cores) if value is None else value


class Capacity:
    """What the running containers of every app reserve of this machine."""

    def __init__(self, cpu: float, memory_mb: int, reclaim: Callable[[object], bool] | None = None) -> None:
        self.total = Need(cpu, memory_mb if memory_mb > 0 else 1 << 40, 0)
        self.reserved = NOTHING
        self.containers = 0
        self._waiting: list[Callable[[], None]] = []  # called once when room comes back
        # Asked by a function whose requests wait on a full machine: stop one idle container of
        # another function (beyond its warm pool) so that its room comes back; True if it did.
        self.reclaim = reclaim

    @classmethod
    def of_this_machine(cls) -> Capacity:
        return cls(cpu_limit(os.environ, os.cpu_count() or 1), machine_memory_mb())

    def take(self, need: Need) -> None:
        """Reserve `need`, or raise: NoCapacity when it must wait, RuntimeError when it never fits."""
        decision = place([NodeView("this machine", self.total, self.reserved)], need)
        if decision.node is None:
            if decision.never:
                raise RuntimeError(f"this machine cannot run it: {decision.reason} ({CPU_LIMIT_ENV})")
            raise NoCapacity(decision.reason.replace("every node that could take", "this machine, which could take"),
                             self._waiting.append, self.reclaim)
        self.reserved += need
        self.containers += 1

    def give_back(self, need: Need) -> None:
        self.reserved = Need(self.reserved.cpu - need.cpu, self.reserved.memory_mb - need.memory_mb, 0)
        self.containers -= 1
        waiting, self._waiting = self._waiting, []
        for callback in waiting:  # the pools that found no room try again now
            callback()


class CappedLauncher:
    """A launcher whose containers reserve their function's share of the machine."""

    def __init__(self, inner: Launcher, capacity: Capacity, need: Need) -> None:
        self.inner = inner
        self.capacity = capacity
        self.need = need

    def prepare(self) -> None:
        self.inner.prepare()

    async def ready(self) -> str | None:
        return await self.inner.ready()

    async def start(self, socket_path: str) -> ContainerProcess:
        self.capacity.take(self.need)
        try:
            process = await self.inner.start(socket_path)
        except BaseException:
            self.capacity.give_back(self.need)
            raise
        return Reserved(process, self)

    async def close(self) -> None:
        await self.inner.close()


class Reserved:
    """A container holding its reservation until it has exited."""

    def __init__(self, process: ContainerProcess, launcher: CappedLauncher) -> None:
        self.process = process
        self.pid = process.pid
        self.note = process.note
        self._launcher: CappedLauncher | None = launcher

    def lines(self) -> AsyncIterator[bytes]:
        return self.process.lines()

    async def wait(self) -> int:
        code = await self.process.wait()
        if self._launcher is not None:
            self._launcher.capacity.give_back(self._launcher.need)
            self._launcher = None
        return code

    async def stop(self, grace: float) -> None:
        await self.process.stop(grace)

    def out_of_memory(self) -> str | None:
        return self.process.out_of_memory()


__all__ = ["CPU_LIMIT_ENV", "Capacity", "CappedLauncher", "Reserved", "cpu_limit", "machine_memory_mb"]

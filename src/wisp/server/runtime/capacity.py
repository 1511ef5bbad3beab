"""This machine's capacity, as containers reserve it (issue 15, point 3): the local runtimes'
placement rule. A container reserves its function's `cpu=` and `memory=` (Modal's defaults when
unset) for its life; the reservations of running containers never exceed the machine's cores
(`WISP_CPU_LIMIT`, default all of them) and memory. A start beyond that raises `NoCapacity`, so
the pool keeps its requests waiting for a container instead of starting more than the machine
can run; a function that could never fit fails its start, saying why. The rule is
`cluster.placement`'s, on one node. A function with `gpu=` also holds devices of the machine's
GPUs (`gpus.choose`) for its container's life: none free, its requests wait likewise.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Collection, Mapping

from ..._gpu import GpuOption
from .base import ContainerProcess, Launcher, NoCapacity
from .cluster.placement import NOTHING, Need, NodeView, place
from .gpu_discovery import discover
from .gpus import NO_GPUS, Grant, Inventory, choose, rank

CPU_LIMIT_ENV = "WISP_CPU_LIMIT"
NO_INVENTORY = Inventory()


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

    def __init__(self, cpu: float, memory_mb: int, reclaim: Callable[[object], bool] | None = None,
                 gpus: Inventory = NO_INVENTORY) -> None:
        self.total = Need(cpu, memory_mb if memory_mb > 0 else 1 << 40, 0)
        self.reserved = NOTHING
        self.containers = 0
        self.gpus = gpus
        self.gpus_held: dict[int, object] = {}  # device index -> the launcher whose container holds it
        self._waiting: list[Callable[[], None]] = []  # called once when room comes back
        # Asked by a function whose requests wait on a full machine: stop one idle container of
        # another function (beyond its warm pool) so that its room comes back; True if it did.
        self.reclaim = reclaim
        # Likewise for a GPU: one idle container of another function among these launchers, the
        # holders of the devices it could use.
        self.reclaim_gpu: Callable[[object, Collection[object]], bool] | None = None

    @classmethod
    def of_this_machine(cls) -> Capacity:
        return cls(cpu_limit(os.environ, os.cpu_count() or 1), machine_memory_mb(), gpus=discover())

    def take(self, need: Need, gpu: tuple[GpuOption, ...] = (), holder: object = None) -> Grant:
        """Reserve `need` and devices for `gpu` (held by `holder`), or raise: NoCapacity when it
        must wait, RuntimeError when it never fits. The devices it holds."""
        decision = place([NodeView("this machine", self.total, self.reserved)], need)
        if decision.node is None:
            if decision.never:
                raise RuntimeError(f"this machine cannot run it: {decision.reason} ({CPU_LIMIT_ENV})")
            raise NoCapacity(decision.reason.replace("every node that could take", "this machine, which could take"),
                             self._waiting.append, self.reclaim)
        grant = NO_GPUS
        if gpu:
            choice = choose(gpu, self.gpus.devices, self.gpus_held)
            if choice.never:
                raise RuntimeError(f"this machine cannot run it: it asks for {', '.join(map(str, gpu))} and has "
                                   f"{self.gpus.describe()}")
            if not choice.devices:
                raise NoCapacity(choice.reason, self._waiting.append, self._gpu_reclaim(gpu))
            grant = Grant(choice.devices)
            self.gpus_held.update((d.index, holder) for d in choice.devices)
        self.reserved += need
        self.containers += 1
        return grant

    def _gpu_reclaim(self, gpu: tuple[GpuOption, ...]) -> Callable[[object], bool] | None:
        """What asks the holders of the devices `gpu` could use for one of them (an idle
        container's: freeing a core would not help)."""
        reclaim = self.reclaim_gpu
        if reclaim is None:
            return None
        usable = {d.index for d in self.gpus.devices if any(rank(o, d) is not None for o in gpu)}
        holders = [holder for index, holder in self.gpus_held.items() if index in usable]
        return lambda asking: reclaim(asking, holders)

    def give_back(self, need: Need, gpus: Grant = NO_GPUS) -> None:
        self.reserved = Need(self.reserved.cpu - need.cpu, self.reserved.memory_mb - need.memory_mb, 0)
        for device in gpus.devices:
            self.gpus_held.pop(device.index, None)
        self.containers -= 1
        waiting, self._waiting = self._waiting, []
        for callback in waiting:  # the pools that found no room try again now
            callback()


class CappedLauncher:
    """A launcher whose containers reserve their function's share of the machine."""

    def __init__(self, inner: Launcher, capacity: Capacity, need: Need, gpu: tuple[GpuOption, ...] = ()) -> None:
        self.inner = inner
        self.capacity = capacity
        self.need = need
        self.gpu = gpu  # the function's gpu= options, in order

    def prepare(self) -> None:
        self.inner.prepare()

    async def ready(self) -> str | None:
        return await self.inner.ready()

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> ContainerProcess:
        grant = self.capacity.take(self.need, self.gpu, self)
        try:
            process = await self.inner.start(socket_path, grant)
        except BaseException:
            self.capacity.give_back(self.need, grant)
            raise
        return Reserved(process, self, grant)

    async def close(self) -> None:
        await self.inner.close()


class Reserved:
    """A container holding its reservation until it has exited."""

    def __init__(self, process: ContainerProcess, launcher: CappedLauncher, gpus: Grant = NO_GPUS) -> None:
        self.process = process
        self.pid = process.pid
        self.note = process.note
        self.gpus = gpus
        self._launcher: CappedLauncher | None = launcher

    def lines(self) -> AsyncIterator[bytes]:
        return self.process.lines()

    async def wait(self) -> int:
        code = await self.process.wait()
        if self._launcher is not None:
            self._launcher.capacity.give_back(self._launcher.need, self.gpus)
            self._launcher = None
        return code

    async def stop(self, grace: float) -> None:
        await self.process.stop(grace)

    def out_of_memory(self) -> str | None:
        return self.process.out_of_memory()


__all__ = ["CPU_LIMIT_ENV", "Capacity", "CappedLauncher", "Reserved", "cpu_limit", "machine_memory_mb"]

"""The Runtime interface: what the pools need to run a function's containers."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..._protocol import Start
from ..isolation import AppUser
from .gpus import NO_GPUS, Grant

if TYPE_CHECKING:
    from .slots import SlotSupply


class ContainerProcess(Protocol):
    pid: int
    note: str | None  # said once in the app's logs (e.g. why it was not forked from a zygote)

    def lines(self) -> AsyncIterator[bytes]:
        """What the container writes to stdout and stderr, a line at a time, until it exits."""
        ...

    async def wait(self) -> int:
        """Wait for the container to exit; its exit code."""
        ...

    async def stop(self, grace: float) -> None:
        """Ask the container to stop (it drains), and force it after `grace` seconds."""
        ...

    def out_of_memory(self) -> str | None:
        """"out of memory (limit N MiB)" once the kernel has killed it (or a process of it) for
        memory; None otherwise, or where its limits are not enforced (no cgroup slot)."""
        ...


class Log(Protocol):
    def write(self, line: str, *, source: str | None = None) -> None: ...


class NotReady(Exception):
    """What was prepared for a function cannot start its containers (its import did not finish
    within `startup_timeout`); the message says so and what to check."""


class NoCapacity(Exception):
    """No room for another container now (the machine's or a cluster's nodes are full): the pool
    keeps its requests waiting and tries again, rather than counting a failed start. The message
    says why; `when_free`, if set, takes a callback to run as soon as room comes back, and
    `make_room(asking)` asks another function (not `asking`) to give up an idle container."""

    def __init__(self, message: str, when_free: Callable[[Callable[[], None]], None] | None = None,
                 make_room: Callable[[object], bool] | None = None) -> None:
        super().__init__(message)
        self.when_free = when_free
        self.make_room = make_room


class Launcher(Protocol):
    """Starts the containers of one version of one function."""

    def prepare(self) -> None:
        """Get ready to start containers soon (a zygote, say), in the background."""

    async def ready(self) -> str | None:
        """Wait for what `prepare` started, within the function's `startup_timeout`.

        Raises NotReady when containers cannot be started from it. Returns why only a ready
        container can prove this version (its script failed to import ahead of its containers,
        which now import it themselves), or None. A fallback that needs no proof (fresh processes)
        returns None; `start` says why in the container's note."""

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> ContainerProcess:
        """Start a container that serves on `socket_path`, holding the GPUs of `gpus` (its
        CUDA_VISIBLE_DEVICES, and `Start.gpu_devices`: a sandbox binds only those nodes)."""
        ...

    async def close(self) -> None:
        """The version is gone and its containers have stopped: stop what was kept for it."""


class Runtime(Protocol):
    name: str

    def launcher(self, python: str, start: Start, *, env: Mapping[str, str], cwd: Path, fork: bool, log: Log,
                 startup_timeout: float = 300.0, user: AppUser | None = None,
                 slots: SlotSupply | None = None) -> Launcher:
        """A launcher for containers of `start` (the container protocol's Start, its socket
        filled in per container), run by the image's `python` in `env` and `cwd`.

        `user`: the app's uid/gid (and socket folder); its containers run as it, and so does
        whatever runs its code ahead of them (a function zygote). None: the server's uid.

        `fork=False`: the function asked for fresh processes; runtimes that fork must not.
        `startup_timeout`: how long what is prepared for the function (its import) may take.
        `slots`: its containers' limits and the cgroup slots that enforce them (`slots.py`); each
        container (and a function zygote) joins one as its first step. None: no limits.
        """
        ...

    async def close(self) -> None:
        """Stop whatever the runtime itself keeps running."""

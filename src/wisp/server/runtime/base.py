"""The Runtime interface: what the pools need to run a container."""
from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol


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


class Runtime(Protocol):
    name: str

    async def start(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> ContainerProcess: ...

    def prepare(self, python: str) -> None:
        """Get ready to start containers of this image soon (a zygote, say)."""

    async def close(self) -> None:
        """Stop whatever the runtime itself keeps running."""

"""The local runtime: each container is a process group on this machine."""
from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from .base import Log


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """The next line a container wrote; b"" at the end. A line over the stream's limit comes in pieces."""
    try:
        return await reader.readline()
    except ValueError:
        return await reader.read(65536)


class LocalProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.note: str | None = None

    async def lines(self) -> AsyncIterator[bytes]:
        assert self._proc.stdout is not None
        while line := await read_line(self._proc.stdout):
            yield line

    async def wait(self) -> int:
        return await self._proc.wait()

    def _signal_group(self, sig: int) -> None:
        # The whole group, so whatever the user's code started goes too.
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    async def stop(self, grace: float) -> None:
        if self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), grace)
            except asyncio.TimeoutError:
                pass
        self._signal_group(signal.SIGKILL)  # leftovers of the group, even after a clean exit
        await self._proc.wait()


class LocalLauncher:
    """Every container a fresh interpreter: nothing to prepare or keep."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, note: str | None = None) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.note = note

    def prepare(self) -> None:
        pass

    async def ready(self) -> str | None:
        return None

    async def start(self, socket_path: str) -> LocalProcess:
        proc = await asyncio.create_subprocess_exec(
            *self.argv, "--socket", socket_path,
            env=self.env,
            cwd=str(self.cwd),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=1 << 20,
        )
        process = LocalProcess(proc)
        process.note = self.note
        return process

    async def close(self) -> None:
        pass


class LocalRuntime:
    name = "local"

    def launcher(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, fork: bool, log: Log,
                 startup_timeout: float = 300.0) -> LocalLauncher:
        return LocalLauncher(argv, env, cwd)

    async def close(self) -> None:
        pass

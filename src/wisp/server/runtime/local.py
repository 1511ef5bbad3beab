"""The local runtime: each container is a process group on this machine."""
from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from ..isolation import AppUser
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


def _become_user(uid: int, gid: int) -> None:
    """In the child, between fork and exec: the app's uid/gid, no supplementary groups (a failure
    aborts the start: the process never runs as the server's uid)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


class LocalLauncher:
    """Every container a fresh interpreter: nothing to prepare or keep."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, note: str | None = None,
                 user: AppUser | None = None) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.note = note
        self.user = user  # the app's uid/gid: the process runs as it from its first instruction

    def prepare(self) -> None:
        pass

    async def ready(self) -> None:
        pass

    async def start(self, socket_path: str) -> LocalProcess:
        # Not Popen's user=/group=/extra_groups=: uvloop's subprocesses refuse them; preexec_fn works on both loops.
        drop = {} if self.user is None else {"preexec_fn": functools.partial(_become_user, self.user.uid, self.user.gid)}
        proc = await asyncio.create_subprocess_exec(
            *self.argv, "--socket", socket_path,
            env=self.env,
            cwd=str(self.cwd),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=1 << 20,
            **drop,  # type: ignore[arg-type]
        )
        process = LocalProcess(proc)
        process.note = self.note
        return process

    async def close(self) -> None:
        pass


class LocalRuntime:
    name = "local"

    def launcher(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, fork: bool, log: Log,
                 startup_timeout: float = 300.0, user: AppUser | None = None) -> LocalLauncher:
        return LocalLauncher(argv, env, cwd, user=user)

    async def close(self) -> None:
        pass

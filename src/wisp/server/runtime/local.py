"""The local runtime: each container is a process group on this machine."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path

from ..._protocol import Start
from ..._runtime import cgroup
from ..._runtime._parent import exit_unless_parent
from ..isolation import AppUser
from . import groups
from .base import Log
from .gpus import NO_GPUS, Grant
from .slots import Slot, SlotSupply

OUTPUT_AFTER_EXIT = 2.0  # seconds a container's output is still read once it has exited


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """The next line a container wrote; b"" at the end. A line over the stream's limit comes in pieces."""
    try:
        return await reader.readline()
    except ValueError:
        return await reader.read(65536)


async def lines_until_exit(reader: asyncio.StreamReader, exited: Awaitable[int]) -> AsyncIterator[bytes]:
    """A container's lines until its output ends, or until it has exited and written nothing
    more for OUTPUT_AFTER_EXIT: a process it started outside its group (setsid) may hold the
    pipe open for ever, and the container's exit must still be noticed (and a stop finish)."""
    exit_task = asyncio.ensure_future(exited)
    try:
        while not exit_task.done():
            read = asyncio.ensure_future(read_line(reader))
            await asyncio.wait((read, exit_task), return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()  # a cancelled readline keeps what it had buffered
                with contextlib.suppress(asyncio.CancelledError):
                    await read
                break
            if not (line := read.result()):
                return
            yield line
        while True:
            try:
                line = await asyncio.wait_for(read_line(reader), OUTPUT_AFTER_EXIT)
            except asyncio.TimeoutError:
                return
            if not line:
                return
            yield line
    finally:
        if not exit_task.done():
            exit_task.cancel()


class LocalProcess:
    def __init__(self, proc: asyncio.subprocess.Process, slot: Slot | None = None) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.note: str | None = None
        self.slot = slot  # its cgroups (limits), removed once it has exited

    async def lines(self) -> AsyncIterator[bytes]:
        assert self._proc.stdout is not None
        async for line in lines_until_exit(self._proc.stdout, self._proc.wait()):
            yield line

    async def wait(self) -> int:
        code = await self._proc.wait()
        self._signal_group(signal.SIGKILL)  # what it started goes with it (it may have crashed)
        groups.ended(self.pid)
        if self.slot is not None:
            self.slot.done()
        return code

    def out_of_memory(self) -> str | None:
        return None if self.slot is None else self.slot.out_of_memory()

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


def child_setup(server: int, user: AppUser | None, procs: list[str] | None = None) -> None:
    """In the child, between fork and exec. First its cgroup slot (`procs`), joined while it is
    still the server's uid. Not Popen's user=/group=/extra_groups=: uvloop's subprocesses refuse
    them. The uid next: changing it clears the parent-death signal. Then it dies with the server
    (SIGKILL), even a server killed with -9; the group's others are ended by the next start of
    the server (`groups`)."""
    cgroup.join(procs, 2)  # stdout/stderr are the container's output pipe by now
    if user is not None:
        _become_user(user.uid, user.gid)
    exit_unless_parent(signal.SIGKILL, server)


def agent_argv(python: str, start: Start) -> list[str]:
    """The container agent as a fresh process: its one argument is the Start message."""
    return [python, "-m", "wisp._runtime", "--start", start.to_arg()]


class LocalLauncher:
    """Every container a fresh interpreter: nothing to prepare or keep."""

    def __init__(self, python: str, start: Start, env: Mapping[str, str], cwd: Path, note: str | None = None,
                 user: AppUser | None = None, slots: SlotSupply | None = None) -> None:
        self.python = python
        self.slots = slots  # its containers' limits (cgroup slots made ahead); None: none
        self.start_params = start
        self.env = dict(env)
        self.cwd = cwd
        self.note = note
        self.user = user  # the app's uid/gid: the process runs as it from its first instruction

    def prepare(self) -> None:
        if self.slots is not None:
            self.slots.prepare()

    async def ready(self) -> str | None:
        return None

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> LocalProcess:
        start = self.start_params.for_container(socket_path, gpus.device_nodes())
        return await spawn(agent_argv(self.python, start), {**self.env, **gpus.env()}, self.cwd, self.user, self.note,
                           self.slots.take() if self.slots is not None else None)

    async def close(self) -> None:
        if self.slots is not None:
            self.slots.close()


async def spawn(argv: list[str], env: Mapping[str, str], cwd: Path, user: AppUser | None = None,
                note: str | None = None, slot: Slot | None = None) -> LocalProcess:
    """A container as a fresh process group: in its cgroup `slot` and run as `user` from its first
    instruction, its output piped, dying with the server, and recorded for the next start to reap."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=str(cwd),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=1 << 20,
            preexec_fn=functools.partial(child_setup, os.getpid(), user, slot.procs if slot is not None else None),
        )
    except BaseException:
        if slot is not None:
            slot.done()
        raise
    groups.launched(proc.pid)
    process = LocalProcess(proc, slot)
    process.note = note
    return process


class LocalRuntime:
    name = "local"

    def launcher(self, python: str, start: Start, *, env: Mapping[str, str], cwd: Path, fork: bool, log: Log,
                 startup_timeout: float = 300.0, user: AppUser | None = None,
                 slots: SlotSupply | None = None) -> LocalLauncher:
        return LocalLauncher(python, start, env, cwd, user=user, slots=slots)

    async def close(self) -> None:
        pass

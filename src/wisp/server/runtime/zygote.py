"""The zygote runtime: containers forked from a function's zygote, itself forked from its image's.

A fork skips the interpreter start, the imports of uvicorn/FastAPI/pydantic and the import of the
user's script, which a fresh container spends most of its ~0.7 s on. Per image Python, one
zygote (started when a function of that image is deployed); per app version, one zygote forked
from it that has imported the script and forks containers for each of its functions
(`SharedZygote`: functions share it when their environments differ only in WISP_FUNCTION;
`wisp._runtime.zygote` says what runs where). Idle zygotes are kept under a memory bound
(WISP_ZYGOTE_MEMORY_MB): past it the least recently used are stopped (`release.to_release`), and
the next container start forks a new function zygote from the image's.
Containers are process groups of their own (the child calls setsid), so stopping one is the same
as on the local runtime; a zygote reports its children's exit codes through status pipes, since
the server is not their parent.

Falls back to fresh processes, with the reason in the app's logs, when the function asks for it
(`fork=False`), when its script leaves threads or sockets behind at import, or when a zygote
cannot be started. Zygotes are replaced when wisp's own container code changes on disk.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import wisp

from ... import _protocol as protocol
from ..._protocol import Exited, Start, decode
from ..._protocol import Log as LogLine
from ..isolation import AppUser, zygote_env
from . import groups, release
from .base import ContainerProcess, Launcher, Log, NotReady
from .gpus import NO_GPUS, Grant
from .local import LocalLauncher, lines_until_exit, read_line
from .slots import Slot, SlotSupply

ZYGOTE_START_TIMEOUT = 60.0  # an image's zygote imports a fixed set of packages
RETIRE_GRACE = 5.0  # at server shutdown, seconds a retired zygote gets before SIGKILL
FINGERPRINT_EVERY = 1.0  # seconds between looks at wisp's files (and at the zygotes' memory bound)
SIZE_EVERY = 10.0  # seconds a zygote's measured PSS is used before it is read again


class ZygoteError(Exception):
    pass


class Unforkable(ZygoteError):
    """The function's script must not be forked; the message says why."""


class PreloadFailed(ZygoteError):
    """A function's zygote could not import the script: its containers import it themselves."""


class ImportTimedOut(NotReady):
    """A function's zygote did not finish importing the script within its `startup_timeout`.
    No fallback: a container importing it itself would hang the same way."""


def wisp_fingerprint() -> str:
    """Changes when wisp's container-side code does: the size and mtime of each of its files."""
    root = Path(wisp.__file__).resolve().parent
    parts = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in ("server", "cli"):  # never imported in a container
            continue
        with contextlib.suppress(OSError):
            stat = path.stat()
            parts.append(f"{relative}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class ForkedProcess:
    """A process forked by a zygote: output and exit status arrive through pipes."""

    def __init__(self, pid: int, output: asyncio.StreamReader, status: asyncio.StreamReader,
                 slot: Slot | None = None) -> None:
        self.pid = pid
        self._output = output
        self._status = status
        self.slot = slot  # its cgroups (limits), removed once it has exited
        self._code: int | None = None
        self._exit: asyncio.Task[int] | None = None  # one reader of the status pipe, shared
        self.note: str | None = None

    @property
    def running(self) -> bool:
        return self._code is None

    async def readline(self) -> bytes:
        """The next line of output; b"" once the process has closed it."""
        return await read_line(self._output)

    async def lines(self) -> AsyncIterator[bytes]:
        async for line in lines_until_exit(self._output, self.wait()):
            yield line

    async def wait(self) -> int:
        if self._exit is None:
            self._exit = asyncio.ensure_future(self._read_status())
        return await asyncio.shield(self._exit)

    async def _read_status(self) -> int:
        data = await self._status.read()
        message = decode(data) if data else None
        # What it started goes with it (it may have crashed); and if the zygote died before
        # reaping it, nothing of it is left.
        self._signal(signal.SIGKILL)
        self._code = message.code if isinstance(message, Exited) else -1
        groups.ended(self.pid)
        if self.slot is not None:
            self.slot.done()
        return self._code

    def out_of_memory(self) -> str | None:
        return None if self.slot is None else self.slot.out_of_memory()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace: float) -> None:
        if self._code is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), grace)
            except asyncio.TimeoutError:
                pass
        self._signal(signal.SIGKILL)
        await self.wait()


async def fork_from(socket_path: str, request: dict[str, Any], slot: Slot | None = None) -> ForkedProcess:
    """Ask the zygote listening on `socket_path` to fork a child; the child's pipes are ours.
    `slot`: the cgroups the child joins first (its procs files are in the request), ours to
    remove once the child has exited, or now if it never was."""
    if slot is not None:
        request = {**request, "cgroup": slot.procs}
    try:
        return await _fork_from(socket_path, request, slot)
    except BaseException:
        if slot is not None:
            slot.done()
        raise


def _open_procs(paths: list[str]) -> list[int]:
    """A slot's files, opened for the child to write to (`wisp._runtime.cgroup.join`): a
    sandboxed zygote's children cannot reach /sys/fs/cgroup by name."""
    opened: list[int] = []
    try:
        for path in paths:
            opened.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except OSError as exc:
        for fd in opened:
            os.close(fd)
        raise ZygoteError(f"could not open the container's cgroup ({exc.filename}: {exc.strerror}); "
                          "check that the server may manage cgroups") from exc
    return opened


async def _fork_from(socket_path: str, request: dict[str, Any], slot: Slot | None) -> ForkedProcess:
    loop = asyncio.get_running_loop()
    procs = _open_procs(list(slot.procs)) if slot is not None else []
    out_r, out_w = os.pipe()
    status_r, status_w = os.pipe()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, socket_path)
        sock.setblocking(True)  # a small message on a local socket: sending does not block
        socket.send_fds(sock, [json.dumps(request).encode()], [out_w, status_w, *procs])
        sock.setblocking(False)
        reply = b""
        pidfds: list[int] = []
        try:
            while not reply.endswith(b"\n"):
                chunk, fds = await _recv_with_fds(sock)
                pidfds += fds
                if not chunk:
                    raise ZygoteError("the zygote closed the connection without forking")
                reply += chunk
            pid = _pid_of(pidfds[0]) if pidfds else None
        finally:
            for fd in pidfds:
                os.close(fd)
    except BaseException:
        os.close(out_r)
        os.close(status_r)
        raise
    finally:
        sock.close()
        for fd in (out_w, status_w, *procs):
            os.close(fd)
    answer = json.loads(reply)
    if "pid" not in answer:
        os.close(out_r)
        os.close(status_r)
        raise ZygoteError(answer.get("error", "the zygote refused to fork"))
    pid = pid or int(answer["pid"])  # as the server sees it (a sandboxed zygote's own pids are not)
    groups.launched(pid)
    return ForkedProcess(pid, await _reader(out_r), await _reader(status_r), slot)


async def _recv_with_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Bytes and the descriptors passed with them, once the socket is readable."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 4096, 1)
            return data, fds
        except (BlockingIOError, InterruptedError):
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sock.fileno(), _set_done, readable)
            try:
                await readable
            finally:
                loop.remove_reader(sock.fileno())


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _pid_of(pidfd: int) -> int | None:
    """The pid a pidfd stands for, in this process's pid namespace (its fdinfo's `Pid:`)."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as info:
            for line in info:
                if line.startswith("Pid:"):
                    pid = int(line.split()[1])
                    return pid if pid > 0 else None
    except (OSError, ValueError, IndexError):
        pass
    return None


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    return reader


def _request(start: Start, env: Mapping[str, str], cwd: Path, user: AppUser | None = None,
             sandbox: Mapping[str, Any] | None = None, socket_path: str | None = None,
             tmp_size_mb: int | None = None) -> dict[str, Any]:
    """A fork request; with `user`, the child drops to the app's uid/gid before any user code runs;
    with `sandbox` (the runtime's settings), it enters its sandbox (`wisp._runtime.sandbox`) with
    the version's folder and the folder of its socket (`socket_path`, else the Start's).
    `tmp_size_mb`: the size of the container's /tmp (`ephemeral_disk=`; the sandbox mounts it)."""
    request: dict[str, Any] = {"start": start.to_arg(), "env": dict(env), "cwd": str(cwd)}
    if user is not None:
        request.update(uid=user.uid, gid=user.gid)
    if sandbox is not None:
        request["sandbox"] = sandbox_fields(sandbox, start.directory, socket_path or start.socket or "")
    if tmp_size_mb is not None:
        request["tmp_size_mb"] = tmp_size_mb
    return request


def sandbox_fields(sandbox: Mapping[str, Any], version_dir: str, socket_path: str) -> dict[str, Any]:
    """What a sandboxed child is told: the runtime's settings, its version's folder and the folder
    where it binds its socket (both shown inside its sandbox)."""
    return {**sandbox, "version_dir": version_dir, "socket_dir": os.path.dirname(socket_path)}


class _Zygote:
    """What both kinds of zygote do for the server: fork a child on their socket."""

    socket_path: str
    last_used: float = 0.0  # when it last forked (time.monotonic())

    async def fork(self, start: Start, env: Mapping[str, str], cwd: Path,
                   user: AppUser | None = None, sandbox: Mapping[str, Any] | None = None,
                   slots: SlotSupply | None = None) -> ForkedProcess:
        self.last_used = time.monotonic()
        request = _request(start, env, cwd, user, sandbox,
                           tmp_size_mb=slots.limits.tmp_size_mb if slots is not None else None)
        return await fork_from(self.socket_path, request, slots.take() if slots is not None else None)


class ImageZygote(_Zygote):
    """`python -m wisp._runtime.zygote` in an image's environment, a child of the server."""

    def __init__(self, python: str, socket_path: str, fingerprint: str) -> None:
        self.python = python
        self.socket_path = socket_path
        self.fingerprint = fingerprint  # of wisp's code when it started
        self.proc: asyncio.subprocess.Process | None = None
        self.last_used = time.monotonic()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "wisp._runtime.zygote", "--socket", self.socket_path, "--parent", str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            # Not the server's environment (WISP_HOME, ...): every function zygote is forked from this one.
            start_new_session=True, env=zygote_env(os.environ.get("LANG")),
        )
        groups.launched(self.proc.pid)  # it dies with the server: `--parent` (wisp._runtime._parent)
        try:
            await asyncio.wait_for(self._ready_line(), ZYGOTE_START_TIMEOUT)
        except asyncio.TimeoutError:
            self.kill()
            raise ZygoteError(f"the zygote for {self.python} did not start within {ZYGOTE_START_TIMEOUT:.0f} s") from None

    async def _ready_line(self) -> None:
        """Wait for the JSON ready line. What a library prints while it is imported comes first
        (uvicorn's DeprecationWarning when `websockets` is installed, as `fastapi[standard]`
        does): skip it. Reading on to EOF here would wait for ever on a zygote that did start."""
        assert self.proc is not None and self.proc.stdout is not None
        printed = []
        while line := await self.proc.stdout.readline():
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("ready"):
                        return
            printed.append(line.decode(errors="replace"))
        raise ZygoteError(f"the zygote for {self.python} did not start: {''.join(printed[-20:]).strip()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def retire(self) -> None:
        """Take no more requests; exit once every child has (SIGTERM, see wisp._runtime.zygote)."""
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def wait(self) -> None:
        if self.proc is not None:
            await self.proc.wait()
            groups.ended(self.proc.pid)


class FunctionZygote(_Zygote):
    """A function version's zygote: forked from its image's zygote, has imported the script."""

    def __init__(self, image: ImageZygote, process: ForkedProcess, socket_path: str) -> None:
        self.image = image
        self.process = process
        self.socket_path = socket_path
        self._output: asyncio.Task[None] | None = None
        self.printed: list[str] = []  # what the script printed while it was imported

    @classmethod
    async def start(cls, image: ImageZygote, start: Start, env: Mapping[str, str], cwd: Path,
                    socket_path: str, log: Callable[[str], None], timeout: float,
                    user: AppUser | None = None,
                    forked: Callable[[FunctionZygote], None] = lambda _: None,
                    functions: list[str] | None = None, sandbox: Mapping[str, Any] | None = None,
                    slot: Slot | None = None) -> FunctionZygote:
        """Fork it and wait for its import, at most `timeout` seconds. `forked` is told of it
        first, so that whoever gives up on the import earlier can stop it. `functions`: those it
        forks containers for (it builds each one's app ahead), `start`'s own by default."""
        request = {**_request(start, env, cwd, user, sandbox, socket_path), "zygote": socket_path,
                   "functions": functions or [start.function]}
        image.last_used = time.monotonic()
        process = await fork_from(image.socket_path, request, slot)
        zygote = cls(image, process, socket_path)
        forked(zygote)
        try:
            answer = await asyncio.wait_for(zygote._answer(log), timeout)
        except asyncio.TimeoutError:
            await process.stop(0)
            raise zygote._timed_out(timeout, log) from None
        except BaseException:  # whoever waited for it went away
            await process.stop(0)
            raise
        if isinstance(answer, protocol.Unforkable):
            await process.wait()
            raise Unforkable(answer.reason)
        zygote._output = asyncio.ensure_future(zygote._forward(log))
        process._exit = asyncio.ensure_future(process._read_status())  # keeps `alive` true to fact
        return zygote

    async def _answer(self, log: Callable[[str], None]) -> protocol.ZygoteReady | protocol.Unforkable:
        """Wait for the zygote's one line. What the script printed at import goes to the app's
        log, unless the import failed: then each container imports it and prints it again."""
        printed = self.printed
        while line := await self.process.readline():  # not `async for`: the rest goes to _forward
            message = decode(line)
            if isinstance(message, (protocol.ZygoteReady, protocol.Unforkable)):
                for earlier in printed:
                    log(earlier)
                return message
            printed.append(message.text if isinstance(message, LogLine) else line.decode(errors="replace").rstrip("\n"))
        code = await self.process.wait()
        last = self.process.out_of_memory() or next((line for line in reversed(printed) if line.strip()), "no output")
        raise PreloadFailed(f"importing the script failed (exit code {code}): {last}")

    def _timed_out(self, timeout: float, log: Callable[[str], None]) -> ImportTimedOut:
        """What the import printed goes to the log (no container will print it again)."""
        for line in self.printed:
            log(line)
        last = next((line for line in reversed(self.printed) if line.strip()), None)
        return ImportTimedOut(
            f"importing the script did not finish within startup_timeout={timeout:g} s"
            f"{f' (its last output: {last})' if last else ''}. Check what it waits for at import on the "
            "server, where WISP_FUNCTION is set (a network call, a lock, a loop), or raise the "
            "function's startup_timeout.")

    async def _forward(self, log: Callable[[str], None]) -> None:
        while line := await self.process.readline():
            log(line.decode(errors="replace").rstrip("\n"))

    @property
    def alive(self) -> bool:
        return self.process.running

    def retire(self) -> None:
        # Its group: the zygote, and in a sandbox the process that waits for it outside its pid
        # namespace (which ignores SIGTERM). Its containers lead process groups of their own.
        if self.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)


Forker = ImageZygote | FunctionZygote


def sharing_key(python: str, start: Start, env: Mapping[str, str], cwd: Path, user: AppUser | None,
                per_function: bool = False) -> tuple[Any, ...]:
    """Functions with equal keys share one function zygote: the same version's folder and script,
    the same image Python, folder and uid, and the same environment but for WISP_FUNCTION (their
    secrets included: a zygote imports the script in exactly the environment of each function it
    forks for, so no function's secrets ever reach another's containers, and what the script reads
    at import is what it would read in a fresh container). `per_function`: one zygote per
    function, as before issue 16 (WISP_ZYGOTE_PER_FUNCTION=1, for benchmarks)."""
    shared_env = tuple(sorted((k, v) for k, v in env.items() if k != "WISP_FUNCTION"))
    return (python, start.directory, start.module, start.stub, str(cwd), user and (user.uid, user.gid), shared_env,
            start.function if per_function else None)


class SharedZygote:
    """The function zygote of the functions of one app version that share a key (`sharing_key`):
    it imports the script once and forks containers for any of them, each with its own Start,
    environment, folder and uid. Held by their launchers; closed with the last of them. It may be
    released (stopped) while idle to keep idle zygotes under the runtime's memory bound; the next
    container start forks a new one from the image's zygote."""

    def __init__(self, runtime: ZygoteRuntime, key: tuple[Any, ...], python: str, start: Start,
                 env: Mapping[str, str], cwd: Path, log: Log, user: AppUser | None) -> None:
        self.runtime = runtime
        self.key = key
        self.python = python
        self.start_params = start  # the first function's; the zygote loads every function's app
        self.env = dict(env)  # the first function's: equal to the others' but for WISP_FUNCTION
        self.cwd = cwd
        self.user = user
        self._log = log
        self.functions: dict[str, float] = {}  # name -> its startup_timeout
        self.launchers = 0
        self._forker: Forker | None = None  # the function zygote, or its image's if the import failed
        self._renewing: asyncio.Task[Forker] | None = None
        self._import_error: str | None = None  # why the function's zygote could not import the script
        self._unforkable: str | None = None  # why its containers must be fresh processes, once known
        self._importing: FunctionZygote | None = None  # forked, its import not finished yet
        self._closed = False
        self.running = 0  # containers forked from it still running, and starts under way
        self.last_used = time.monotonic()
        self.slots: SlotSupply | None = None  # the first function's limits: its zygote runs user code too

    @property
    def source(self) -> str:
        return f"{','.join(self.functions) or 'function'} zygote"

    def join(self, function: str, startup_timeout: float, slots: SlotSupply | None = None) -> None:
        self.functions[function] = max(startup_timeout, self.functions.get(function, 0.0))
        self.launchers += 1
        if self.slots is None:
            self.slots = slots

    def prepare(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self._renew())
            self._renewing.add_done_callback(_retrieve)

    async def ready(self) -> str | None:
        """The zygote's import within startup_timeout (ImportTimedOut past it); the import's
        error when containers now import the script themselves."""
        if self._renewing is None:
            return None
        try:
            await asyncio.shield(self._renewing)
        except NotReady:
            raise
        except Exception:  # no zygote to be had, or unforkable: fresh processes, `start` says why
            return None
        return self._import_error

    @property
    def busy(self) -> bool:
        return self.running > 0 or (self._renewing is not None and not self._renewing.done())

    @property
    def function_zygote(self) -> FunctionZygote | None:
        forker = self._forker
        return forker if isinstance(forker, FunctionZygote) and forker.alive else None

    def _current(self) -> Forker | None:
        forker = self._forker
        if forker is None or not forker.alive:
            return None
        image = forker if isinstance(forker, ImageZygote) else forker.image
        return forker if self.runtime.current(self.python) is image else None

    async def _renew(self) -> Forker:
        current = self._current()
        if current is not None:
            return current
        image = await self.runtime.image_zygote(self.python)
        old, self._forker = self._forker, None
        if isinstance(old, FunctionZygote):
            old.retire()  # it exits once the containers it forked have
        if self._closed:  # closed while the image's zygote started (a deploy that failed): import nothing
            return image
        try:
            # Its socket is in the app's own folder: it binds it as the app's uid, other apps cannot reach it.
            socket_path = self.runtime.socket_path(self.runtime.zygote_folder(self.user))
            self._forker = await FunctionZygote.start(
                image, self.start_params, self.env, self.cwd, socket_path, self._write,
                max(self.functions.values(), default=300.0), self.user, forked=self._forked,
                functions=list(self.functions), sandbox=self.runtime.sandbox,
                slot=self.slots.for_zygote() if self.slots is not None else None)
            self._import_error = None
        except Unforkable as exc:
            self._unforkable = str(exc)
            raise
        except PreloadFailed as exc:
            if not self._closed:  # else close() stopped the import
                self._write(f"[wisp] could not import the script ahead of its containers ({exc}); "
                            "each container imports it itself")
            self._import_error = str(exc)
            self._forker = image
        except ImportTimedOut as exc:
            self._write(f"[wisp] {exc}")
            raise
        finally:
            self._importing = None
            self.last_used = time.monotonic()
        if self._closed:
            self._retire()
        return self._forker

    def _forked(self, zygote: FunctionZygote) -> None:
        self._importing = zygote

    def _write(self, line: str) -> None:
        self._log.write(line, source=self.source)

    async def _forker_for_start(self) -> Forker:
        if self._unforkable is not None:  # the script is what it is: no new import to find it out again
            raise Unforkable(self._unforkable)
        current = self._current()
        if current is not None:
            return current
        if self._renewing is None or self._renewing.done():
            self.prepare()
        assert self._renewing is not None
        return await asyncio.shield(self._renewing)

    async def fork(self, start: Start, env: Mapping[str, str], cwd: Path, user: AppUser | None,
                   slots: SlotSupply | None = None) -> ForkedProcess:
        """A container of one of its functions, with that function's own environment, folder, uid
        and limits (`slots`)."""
        self.running += 1  # busy from now on: the bound never releases a zygote a start waits for
        try:
            forker = await self._forker_for_start()
            process = await forker.fork(start, env, cwd, user, self.runtime.sandbox, slots)
        except BaseException:
            self._ended()
            raise
        exit_watch = asyncio.ensure_future(process.wait())
        exit_watch.add_done_callback(self._exited)
        return process

    def _exited(self, task: asyncio.Future[int]) -> None:
        _retrieve(task)
        self._ended()

    def _ended(self) -> None:
        self.running -= 1
        self.last_used = time.monotonic()

    def release(self) -> bool:
        """Stop the idle function zygote (the memory bound); the next start makes a new one."""
        zygote = self.function_zygote
        if zygote is None or self.busy:
            return False
        self._forker = None
        zygote.retire()  # no children: it exits at once
        self._write("[wisp] released the idle function zygote (WISP_ZYGOTE_MEMORY_MB); "
                    "the next container start forks a new one from the image's zygote")
        return True

    def _retire(self) -> FunctionZygote | None:
        forker, self._forker = self._forker, None
        if isinstance(forker, FunctionZygote):
            forker.retire()
            return forker
        return None

    async def close(self) -> None:
        """The last launcher closed: the function's zygote exits now, not later."""
        if self._closed:
            return
        self._closed = True
        if self._importing is not None:  # a version that failed its deploy, say: its import stops too
            await self._importing.process.stop(0)
        retired = self._retire()
        if retired is not None:
            await retired.process.stop(RETIRE_GRACE)


class ForkLauncher:
    """Starts one function version's containers as forks of the function zygote it shares with
    the other functions of its version (`SharedZygote`)."""

    def __init__(self, runtime: ZygoteRuntime, shared: SharedZygote, python: str, start: Start,
                 env: Mapping[str, str], cwd: Path, user: AppUser | None = None,
                 slots: SlotSupply | None = None) -> None:
        """`start`: what its containers serve (their sockets filled in per container). `user`: the
        app's uid/gid, which the zygote and containers drop to. `slots`: their limits."""
        self.runtime = runtime
        self.shared = shared
        self.python = python
        self.start_params = start
        self.user = user
        self.slots = slots
        # When forking is not to be had; the same slots.
        self._fresh_launcher = runtime.fresh_launcher(python, start, env, cwd, user, slots=slots)
        self.env = dict(env)
        self.cwd = cwd
        self._fresh: str | None = None  # why containers start as fresh processes, once known
        self._closed = False

    def prepare(self) -> None:
        if self.slots is not None:
            self.slots.prepare()
        self.shared.prepare()

    async def ready(self) -> str | None:
        return await self.shared.ready()

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> ContainerProcess:
        if gpus.device_nodes() and self.runtime.binds_devices():
            process = await self._fresh_launcher.start(socket_path, gpus)
            process.note = ("forked from the image's zygote, importing the script itself: its GPUs' device nodes are "
                            "bound into a root of its own, which a function zygote's containers share")
            return process
        if self._fresh is None:
            try:
                return await self.shared.fork(self.start_params.for_container(socket_path, gpus.device_nodes()),
                                              {**self.env, **gpus.env()}, self.cwd, self.user, self.slots)
            except Unforkable as exc:
                self._fresh = f"started as a fresh process, not forked: {exc}"
                note = self._fresh
            except (ZygoteError, OSError, asyncio.TimeoutError) as exc:
                note = f"started as a fresh process, not forked from a zygote: {exc}"
        else:
            note = self._fresh
        process = await self._fresh_launcher.start(socket_path, gpus)
        process.note = self.runtime.fresh_note(note)  # the pool writes it to the app's log
        return process

    async def close(self) -> None:
        """The pool has stopped its containers; the shared zygote goes with its last launcher."""
        if self._closed:
            return
        self._closed = True
        if self.slots is not None:
            self.slots.close()
        await self.runtime.leave(self.shared)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A failure to prepare is reported when a container starts; do not warn about it here."""
    if not task.cancelled():
        task.exception()


class ZygoteRuntime:
    """Fork containers from zygotes; fall back to fresh processes, with the reason."""

    name = "zygote"
    sandbox: dict[str, Any] | None = None  # what forked children are told to enter (SandboxRuntime)

    def __init__(self, fingerprint: Callable[[], str] = wisp_fingerprint, memory_bound: int | None = None) -> None:
        """`memory_bound`: bytes idle zygotes may hold (default: WISP_ZYGOTE_MEMORY_MB, `release`)."""
        self._images: dict[str, ImageZygote] = {}
        self._starting: dict[str, asyncio.Task[ImageZygote]] = {}
        self._retired: list[ImageZygote] = []
        self._users: Counter[str] = Counter()  # launchers per image Python
        self._outside: Counter[str] = Counter()  # running children of `fork_module`, per image Python
        self._shared: dict[tuple[Any, ...], SharedZygote] = {}  # function zygotes by sharing key
        self.memory_bound = release.bound_from_env() if memory_bound is None else memory_bound
        self._per_function = os.environ.get("WISP_ZYGOTE_PER_FUNCTION") == "1"  # the pre-issue-16 way
        self._sizes: dict[int, tuple[float, int]] = {}  # pid -> (when measured, bytes)
        self._dir = tempfile.mkdtemp(prefix="wisp-z-")
        groups.add_folder(self._dir)  # removed by the next start if this server cannot
        self._sockets = 0
        self._fingerprint_of = fingerprint
        self._fingerprint = fingerprint()
        self._checked = time.monotonic()
        self._watch: asyncio.Task[None] | None = None

    def fresh_launcher(self, python: str, start: Start, env: Mapping[str, str], cwd: Path, user: AppUser | None,
                       note: str | None = None, slots: SlotSupply | None = None) -> Launcher:
        """Where a container cannot be forked from its function zygote: a fresh interpreter, with
        the same limits (`slots`)."""
        return LocalLauncher(python, start, env, cwd, user=user, note=note, slots=slots)

    def fresh_note(self, note: str) -> str:
        """What the app's log says of a container `fresh_launcher` started."""
        return note

    def binds_devices(self) -> bool:
        """Whether a container's GPU nodes are bound into a root of its own (the sandbox), which a
        container forked from a function zygote cannot have: `fresh_launcher` starts those."""
        return False

    def launcher(self, python: str, start: Start, *, env: Mapping[str, str], cwd: Path, fork: bool, log: Log,
                 startup_timeout: float = 300.0, user: AppUser | None = None,
                 slots: SlotSupply | None = None) -> Launcher:
        if not fork:
            return self.fresh_launcher(python, start, env, cwd, user, slots=slots,
                                       note="started as a fresh process: the function asks for one (fork=False)")
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._tend())
        self._users[python] += 1
        key = sharing_key(python, start, env, cwd, user, self._per_function)
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = SharedZygote(self, key, python, start, env, cwd, log, user)
        shared.join(start.function, startup_timeout, slots)
        return ForkLauncher(self, shared, python, start, env, cwd, user, slots)

    async def leave(self, shared: SharedZygote) -> None:
        """A launcher closed: the shared zygote goes with its last one."""
        shared.launchers -= 1
        if shared.launchers <= 0:
            if self._shared.get(shared.key) is shared:
                del self._shared[shared.key]
            self.release(shared.python)
            await shared.close()
        else:
            self.release(shared.python)

    def socket_path(self, folder: str | None = None) -> str:
        """A new zygote socket: in the runtime's own folder (0700, the server's: image zygotes run
        as root and fork as any uid), or in `folder` (an app's, for its function zygote)."""
        self._sockets += 1
        return f"{folder or self._dir}/z{self._sockets}-{os.getpid()}.sock"

    def fingerprint(self) -> str:
        """Of wisp's code on disk, looked at most once a second."""
        now = time.monotonic()
        if now - self._checked >= FINGERPRINT_EVERY:
            self._checked = now
            self._fingerprint = self._fingerprint_of()
        return self._fingerprint

    def current(self, python: str) -> ImageZygote | None:
        """The image's zygote, if it is running today's wisp."""
        zygote = self._images.get(python)
        if zygote is None or not zygote.alive or zygote.fingerprint != self.fingerprint():
            return None
        return zygote

    async def image_zygote(self, python: str) -> ImageZygote:
        current = self.current(python)
        if current is not None:
            return current
        self._retire_image(python)
        task = self._starting.get(python)
        if task is None:
            task = self._starting[python] = asyncio.ensure_future(self._start_image_zygote(python))
        return await asyncio.shield(task)

    async def _start_image_zygote(self, python: str) -> ImageZygote:
        zygote = ImageZygote(python, self.socket_path(), self.fingerprint())
        try:
            await zygote.start()
        except BaseException:
            zygote.kill()
            raise
        finally:
            self._starting.pop(python, None)
        self._images[python] = zygote
        return zygote

    async def _tend(self) -> None:
        """Each second: when wisp's code changed on disk, start new zygotes before the next
        container needs one; keep idle zygotes within the memory bound."""
        while True:
            await asyncio.sleep(FINGERPRINT_EVERY)
            stale = [z for z in self._images.values() if z.alive and z.fingerprint != self.fingerprint()]
            if stale:
                for shared in list(self._shared.values()):
                    shared.prepare()
            self.keep_within_bound()

    def zygote_folder(self, user: AppUser | None) -> str | None:
        """Where a function zygote binds its socket: its app's folder (None: the runtime's own)."""
        return user.socket_dir if user else None

    def zygote_pid(self, pid: int) -> int:
        """The function zygote itself, given the pid its image zygote forked (the same here)."""
        return pid

    def _size(self, pid: int, now: float) -> int:
        """What a zygote holds (`release.held_pss`), measured again at most every SIZE_EVERY seconds."""
        measured = self._sizes.get(pid)
        if measured is None or now - measured[0] >= SIZE_EVERY:
            measured = self._sizes[pid] = (now, release.held_pss(pid) or 0)
        return measured[1]

    def held(self, now: float) -> list[release.Held]:
        """What the release policy sees: every function zygote and every current image zygote.
        An image zygote is busy while anything it forked (a function zygote, a container) runs."""
        held = []
        busy_images: set[str] = set()
        for shared in self._shared.values():
            zygote = shared.function_zygote
            if zygote is not None or shared.busy:
                busy_images.add(shared.python)
            if zygote is not None:
                held.append(release.Held(shared.key, self._size(self.zygote_pid(zygote.process.pid), now),
                                         shared.last_used, shared.busy))
        for python, image in self._images.items():
            if image.alive and image.pid is not None:
                held.append(release.Held(python, self._size(image.pid, now), image.last_used,
                                         python in busy_images or python in self._starting or python in self._outside))
        live = {self.zygote_pid(z.process.pid) for z in (s.function_zygote for s in self._shared.values())
                if z is not None}
        live |= {z.pid for z in self._images.values() if z.pid is not None}
        self._sizes = {pid: size for pid, size in self._sizes.items() if pid in live}
        return held

    def keep_within_bound(self) -> list[str]:
        """Stop the least recently used idle zygotes past the memory bound; what was stopped."""
        stopped = []
        for key in release.to_release(self.held(time.monotonic()), self.memory_bound):
            shared = self._shared.get(key) if isinstance(key, tuple) else None
            if shared is not None and shared.release():
                stopped.append(shared.source)
            elif isinstance(key, str) and key in self._images:
                self._retire_image(key)  # no children: it exits at once
                stopped.append(f"image zygote {key}")
        return stopped

    async def fork_module(self, python: str, request: dict[str, Any], slot: Slot | None = None) -> ForkedProcess:
        """A child of the image's zygote that runs a module (`request["module"]`: Modal's
        entrypoint) rather than wisp's agent, in its cgroup `slot`. The image zygote counts as
        busy while it runs."""
        try:
            image = await self.image_zygote(python)
        except BaseException:
            if slot is not None:
                slot.done()
            raise
        image.last_used = time.monotonic()
        process = await fork_from(image.socket_path, request, slot)
        self._outside[python] += 1

        def ended(_: object) -> None:
            self._outside[python] -= 1
            if self._outside[python] <= 0:
                del self._outside[python]

        asyncio.ensure_future(process.wait()).add_done_callback(ended)
        return process

    def hold(self, python: str) -> None:
        """Something other than a ForkLauncher forks from the image's zygote (Modal's entrypoint):
        keep it until the matching `release`."""
        self._users[python] += 1

    def release(self, python: str) -> None:
        """A launcher is done: an image zygote nobody launches from any more retires."""
        self._users[python] -= 1
        if self._users[python] <= 0:
            del self._users[python]
            self._retire_image(python)

    def _retire_image(self, python: str) -> None:
        zygote = self._images.pop(python, None)
        if zygote is not None:
            zygote.retire()  # what it forked keeps running; it exits after them
            self._retired.append(zygote)
        self._retired = [z for z in self._retired if z.alive]

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for task in list(self._starting.values()):
            task.cancel()
        zygotes = [*self._images.values(), *self._retired]
        for zygote in zygotes:
            zygote.retire()
        try:
            await asyncio.wait_for(asyncio.gather(*(z.wait() for z in zygotes)), RETIRE_GRACE)
        except asyncio.TimeoutError:
            for zygote in zygotes:
                zygote.kill()
            await asyncio.gather(*(z.wait() for z in zygotes))
        self._images.clear()
        self._retired.clear()
        with contextlib.suppress(OSError):
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)

"""Zygotes: processes that have imported what containers need, and fork containers on demand.

Two levels, both this module:
- An image's zygote, `python -m wisp._runtime.zygote --socket PATH`, runs in the image's
  environment. It imports the container runtime (uvicorn, FastAPI, Starlette, pydantic, ...) and
  runs one request through a throwaway webhook, so that what those libraries build on first use
  is built once and shared by every fork. It leaves no thread and no event loop behind.
- A function zygote is forked from its image's zygote. It takes the environment and folder of
  the functions it serves (those of one app version whose environments differ only in
  WISP_FUNCTION), imports the user's script once and builds, for each of those functions, what
  runs no user hook (`__main__.load`); then it forks containers of any of them, each taking its
  own function's environment, folder and uid, which only serve (`__main__.serve`): enter hooks, factories
  and requests happen in each container, so every container starts from the state the script
  had right after import, as a fresh process would. If the import left threads running or
  opened sockets, it forks nothing and says why (a fork copies a thread's locks but not the
  thread, and would share a connection between containers): the server then starts fresh
  processes. If the import failed, the image's zygote forks containers that import the script
  themselves, so each shows the error as a fresh process would.

Requests arrive on a Unix socket: a JSON line plus two file descriptors, the child's output pipe
and a status pipe. A request may name a cgroup slot (`cgroup`: its `cgroup.procs` files, issue
15), which the child joins before anything else (`cgroup.join`), and a uid/gid (the app's, issue
11): the child drops to it before it takes the environment and folder, so neither a function zygote's import nor a
container ever runs as the image zygote's root. A zygote reaps its children and writes each one's exit code to its status
pipe (the server is not their parent). SIGTERM retires a zygote: it stops taking requests and
exits once its children have. Its parent's death (the kernel's SIGHUP, asked for with
PR_SET_PDEATHSIG, or a changed parent pid) orphans it: it kills its containers' process groups
and exits at once, and its zygote children, orphaned in turn, do the same. Containers die with
their zygote (SIGKILL): a retiring zygote outlives its children, so only a zygote that died early
takes its containers along.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import gc
import importlib
import importlib.util
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, NoReturn

from .._protocol import STANDBY_NAME, Exited, Start, Unforkable, ZygoteReady, encode, encode_line
from . import cgroup, sandbox
from ._parent import die_with_parent

# Imported before any fork; what the agent and uvicorn would otherwise import on first request.
PRELOAD = (
    "wisp._runtime.__main__", "wisp._runtime._asgi", "wisp._runtime._lifecycle", "wisp._runtime._load",
    "wisp._runtime._web_server", "wisp._runtime._pipe",
    "uvicorn", "uvicorn.config", "uvicorn.server", "uvicorn.main", "uvicorn.lifespan.on",
    "uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl", "uvicorn.loops.uvloop",
    "uvicorn.protocols.websockets.wsproto_impl", "uvicorn.protocols.websockets.websockets_impl",
    "fastapi", "fastapi.routing", "fastapi.responses", "fastapi.encoders", "starlette.responses",
    "starlette.routing", "starlette.middleware.errors", "starlette.middleware.exceptions",
    "pydantic", "anyio._backends._asyncio", "multipart", "python_multipart", "a2wsgi", "uvloop",
    "email.parser", "json", "asyncio", "concurrent.futures.thread",
)
MAX_REQUEST = 1 << 20
MAX_CGROUP_FDS = 8  # a slot's files passed with a fork request (cgroup v1: one per controller)
PARENT_CHECK = 1.0  # seconds between checks that the parent (server or image zygote) lives
STANDBY_AFTER = 0.05  # seconds of quiet before a function zygote forks its next container ahead
READY = b"r"  # what a container forked ahead says once it waits for its request, its sandbox entered
PR_SET_DUMPABLE = 4
PR_GET_PDEATHSIG = 2
ORPHANED = signal.SIGHUP  # a zygote's parent-death signal (handled); a container's is SIGKILL

# A fresh interpreter ignores SIGPIPE (a write to a closed socket raises instead of killing the
# process) and turns SIGINT into KeyboardInterrupt; a zygote's own handlers must not leak in.
FRESH_SIGNALS: dict[signal.Signals, Callable[[int, FrameType | None], object] | int] = {
    signal.SIGCHLD: signal.SIG_DFL,
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGHUP: signal.SIG_DFL,
    signal.SIGINT: signal.default_int_handler,
    signal.SIGPIPE: signal.SIG_IGN,
}

Spawn = Callable[[dict[str, Any], int, list[int]], NoReturn]


def preload() -> list[str]:
    """Import what can be imported; the names that could not be (a package the image lacks)."""
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


MODAL_ENTRYPOINT = "modal._container_entrypoint"


def preload_modal() -> bool:
    """In an image with Modal's client (an app deployed by `modal deploy`): what Modal's container
    entrypoint imports, so that a container forked to run it skips those imports. The entrypoint
    module itself is dropped again: each container runs it afresh as `__main__`. The client's
    import reads no config file here (as in a container): nothing of this machine's ~/.modal.toml
    reaches a container."""
    if importlib.util.find_spec("modal") is None:
        return False
    os.environ["MODAL_IS_REMOTE"] = "1"
    try:
        importlib.import_module(MODAL_ENTRYPOINT)
        importlib.import_module("modal._runtime.asgi")  # web functions' wrappers (aiohttp)
    except Exception:
        return False  # the containers import it themselves, and say what fails
    finally:
        del os.environ["MODAL_IS_REMOTE"]
    sys.modules.pop(MODAL_ENTRYPOINT, None)
    with contextlib.suppress(AttributeError):
        delattr(sys.modules["modal"], MODAL_ENTRYPOINT.rpartition(".")[2])
    return True


def warm_up() -> None:
    """One POST through a throwaway webhook, the way a container's first request goes."""
    try:
        from pydantic import BaseModel

        from .._image_steps import ImageSpec
        from .._spec import FunctionSpec, WebSpec
        from ._asgi import build_app, with_errors, with_root_path
        from ._lifecycle import close_loop, new_loop
    except ImportError:  # an image without FastAPI serves no webhook: nothing to warm
        return

    class Item(BaseModel):
        x: int

    async def square(item: Item, times: int = 1) -> dict[str, int]:
        return {"square": item.x**2 * times}

    spec = FunctionSpec(name="warm-up", image=ImageSpec(), web=WebSpec(kind="webhook", method="POST"))
    app = with_root_path(with_errors(build_app(square, spec), spec.name))
    body = b'{"x": 3}'
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/", "raw_path": b"/", "query_string": b"times=2", "root_path": "",
        "headers": [(b"host", b"warm-up"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    loop = new_loop()
    try:
        loop.run_until_complete(app(scope, receive, send))
    finally:
        close_loop(loop)


def thread_count() -> int:
    """Threads of this process, those started outside Python (a C library's pool) included."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def socket_fds() -> set[int]:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return set()
    found = set()
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.add(int(name))
    return found


# Native thread pools that survive fork: they stop their threads before it and start them again
# in the child when next used (pthread_atfork), as multiprocessing's fork relies on. OpenBLAS (as
# numpy and scipy load it) starts its pool when it is loaded; its "get number of threads" function
# is named after the build.
FORK_SAFE_POOLS = {
    "openblas": ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads64_",
                 "scipy_openblas_get_num_threads"),
}


def fork_safe_threads() -> int:
    """Worker threads of the loaded fork-safe pools (a pool of N runs N - 1 besides the caller)."""
    try:
        with open("/proc/self/maps") as maps:
            libraries = {line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line}
    except OSError:
        return 0
    count = 0
    for library in libraries:
        for marker, getters in FORK_SAFE_POOLS.items():
            if marker not in os.path.basename(library).lower():
                continue
            try:
                loaded = ctypes.CDLL(library)  # already loaded: this only looks up its symbols
            except OSError:
                continue
            getter = next((getattr(loaded, name) for name in getters if hasattr(loaded, name)), None)
            if getter is not None:
                count += max(int(getter()) - 1, 0)
    return count


def unforkable(sockets_before: set[int], fork_safe: int) -> str | None:
    """Why this process must not fork containers, or None. `fork_safe`: threads known to be."""
    python = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if python:
        return (f"importing the script left {len(python)} thread(s) running ({', '.join(python)}); "
                "a forked container would get their locks but not the threads")
    native = thread_count() - 1 - fork_safe
    if native > 0:
        return (f"importing the script left {native} thread(s) running (started outside Python, by a native "
                "library); a forked container would get their locks but not the threads")
    opened = socket_fds() - sockets_before
    if opened:
        return (f"importing the script opened {len(opened)} socket(s); every forked container would share "
                "those connections")
    return None


def drop_privileges(uid: int, gid: int) -> None:
    """Become the app's uid/gid for good (real, effective and saved; no supplementary groups), as
    a process started under that uid would be. A child that cannot raises: it never runs as root."""
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) == (uid, uid, gid, gid):
        return  # a function zygote's container: already the app's
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    deathsig, parent = ctypes.c_int(0), os.getppid()
    prctl(PR_GET_PDEATHSIG, ctypes.byref(deathsig), 0, 0, 0)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.getgid() != gid:
        raise PermissionError(f"could not drop to uid {uid} / gid {gid}")
    # A uid change leaves the process undumpable (its /proc files root's); an exec under the uid would not.
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    # It also clears the parent-death signal: ask again, and go if the parent went in between.
    if deathsig.value and not die_with_parent(deathsig.value, parent):
        os._exit(1)


def _become(request: dict[str, Any], out_fd: int, inherited: list[int]) -> None:
    """In a forked child: a process of its own, with the request's output, uid, environment and folder."""
    # First: nothing of the child runs outside its limits. Through the descriptors the server
    # opened (a sandboxed zygote's root has no /sys/fs/cgroup), else the files' paths.
    cgroup.join(request.get("cgroup"), out_fd, request.pop("cgroup_fds", ()))
    for fd in inherited:  # siblings' status pipes: holding them would hide their exits
        with contextlib.suppress(OSError):
            os.close(fd)
    os.setsid()
    for sig, handler in FRESH_SIGNALS.items():  # what a fresh interpreter starts with
        signal.signal(sig, handler)
    signal.set_wakeup_fd(-1)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    sys.stdout.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]  # a TextIOWrapper here
    sys.stderr.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]  # a TextIOWrapper here
    if request.get("uid") is not None:  # before the environment, the folder and any user code
        drop_privileges(int(request["uid"]), int(request["gid"]))
    sandbox.enter(request)  # --runtime sandbox: namespaces, its own root, seccomp (wisp._runtime.sandbox)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(str(request["cwd"]))


def _run_child(request: dict[str, Any], out_fd: int, inherited: list[int], body: Callable[[], object]) -> NoReturn:
    code = 1
    try:
        _become(request, out_fd, inherited)
        body()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _comm() -> bytes:
    with open("/proc/self/comm", "rb") as comm:
        return comm.read().rstrip(b"\n")


def _set_comm(name: bytes) -> None:
    with contextlib.suppress(OSError), open("/proc/self/comm", "wb") as comm:
        comm.write(name[:15])


@dataclass
class Standby:
    """A container forked ahead and parked (`Zygote.park`): the next request goes to it over
    `sock` with its descriptors, so the forks (two in a sandbox, with the pid namespace's helper)
    are off the cold path."""

    pid: int
    sock: socket.socket
    pid_namespace: bool  # made as `sandbox.forks_pid_namespaces` said for the request before it
    sandbox: str | None  # the sandbox it enters while parked (`sandbox.ahead_key`), if any
    ready: bool = False  # it said so (`READY`): its sandbox is entered and it waits for a request
    missed: int = 0  # requests of other sandbox settings since it was parked


class Zygote:
    """Fork a child per request on a Unix socket; reap children; retire on SIGTERM."""

    def __init__(self, path: str, spawn: Spawn, fork_safe_threads: int = 0, parent: int | None = None,
                 standby: bool = False) -> None:
        """`parent`: the pid our parent had when it started us, if known (a changed one orphans us).
        `standby`: keep a container forked ahead once a request has come (a function's zygote)."""
        self.path = path
        self.spawn = spawn
        self.keeps_standby = standby
        self.standby: Standby | None = None
        self.pid_namespace: bool | None = None  # what the last request's child got: the next standby's
        self.sandbox: dict[str, Any] = {}  # the last request's sandbox settings: the next standby enters them
        self.fork_safe_threads = fork_safe_threads  # e.g. OpenBLAS's pool: it stops itself for a fork
        self.listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.children: dict[int, int] = {}  # pid -> status pipe fd
        self.parent = os.getppid()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wake select(); reaping happens below
        self.zygotes: set[int] = set()  # children that are zygotes: they end their own children
        self.helpers: set[int] = set()  # `_fork`'s helpers, reaped once they have exited
        self.retiring = False
        self.orphaned = False
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(ORPHANED, self._on_orphaned)
        signal.set_wakeup_fd(wake_w)
        if parent is not None and self.parent != parent:
            self.orphaned = True  # the parent died before the handler was in place

    def _on_sigterm(self, *_: object) -> None:
        self.retiring = True  # select() wakes up through the wakeup fd; the loop retires

    def _on_orphaned(self, *_: object) -> None:
        self.orphaned = True

    def end_children(self) -> None:
        """The parent died: nothing will route to our containers again, so they go now, with
        their process groups (what a container started). Zygote children are left to notice
        our exit themselves (their own parent-death signal), so they can end their containers."""
        for pid in self.children:
            if pid not in self.zygotes:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
        self.drop_standby()

    def drop_standby(self) -> None:
        """The parked container ends at the end of its socket (`_parked`)."""
        standby, self.standby = self.standby, None
        if standby is not None:
            standby.sock.close()

    def retire(self) -> None:
        self.drop_standby()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def serve(self) -> None:
        while self.listener is not None or self.children:
            if self.orphaned:
                self.end_children()
                self.retire()
                return
            if self.retiring:
                self.retire()
            watched: list[socket.socket | int] = [self.wake_r] if self.listener is None else [self.listener, self.wake_r]
            park = self.wants_standby()
            try:
                ready, _, _ = select.select(watched, [], [], STANDBY_AFTER if park else PARENT_CHECK)
            except InterruptedError:
                continue
            if park and not ready and self.wants_standby():
                self.park()
            if os.getppid() != self.parent:  # whoever asked for containers is gone
                self.orphaned = True
                continue
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
            self.reap()
            if self.listener is not None and self.listener in ready and not self.retiring:
                conn, _ = self.listener.accept()
                with conn:
                    self.handle(conn)

    def receive(self, conn: socket.socket) -> tuple[dict[str, Any], bool, int, int] | None:
        """A fork request: its JSON, whether its child gets a pid namespace of its own
        (`sandbox.forks_pid_namespaces`), and the child's output and status fds; None, after saying why
        when the peer is still there, for anything else. A peer that hangs up at once or sends
        garbage (any process of the app's uid can reach this socket) must never end the zygote:
        its children would die with it."""
        try:
            data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 2 + MAX_CGROUP_FDS)
        except OSError:
            return None
        problem = None
        if len(fds) < 2:
            problem = b'{"error": "expected two file descriptors"}\n'
        elif thread_count() > 1 + self.fork_safe_threads:  # fork with threads could deadlock the child
            problem = b'{"error": "the zygote has threads; start containers as fresh processes"}\n'
        else:
            try:
                request = json.loads(data)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
                request["cgroup_fds"] = fds[2:]  # its cgroup slot's files, opened by the server
                pid_namespace = sandbox.forks_pid_namespaces(request)
            except ValueError:
                problem = b'{"error": "the request is not a JSON object"}\n'
            except (AttributeError, TypeError):
                problem = b'{"error": "the request\'s sandbox settings are malformed"}\n'
        if problem is not None:
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(problem)
            return None
        return request, pid_namespace, fds[0], fds[1]

    def handle(self, conn: socket.socket) -> None:
        received = self.receive(conn)
        if received is None:
            return
        request, pid_namespace, out_fd, status_fd = received
        parent = os.getpid()
        self.pid_namespace = pid_namespace
        self.sandbox = {key: request[key] for key in ("sandbox", "tmp_size_mb") if key in request}
        try:
            pid = self.hand_over(request, out_fd, pid_namespace)
            adopted = False
            if pid is None:
                pid, adopted = self._fork(pid_namespace)
        except OSError as exc:
            for fd in (out_fd, status_fd, *request.get("cgroup_fds", ())):
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": f"could not fork: {exc}"}).encode() + b"\n")
            return
        if pid == 0:
            signal.signal(ORPHANED, signal.SIG_DFL)  # until a zygote child installs its own
            # An adopted child dies with this zygote anyway: it is pid 1 of the namespace around it.
            if not adopted and not die_with_parent(ORPHANED if request.get("zygote") else signal.SIGKILL, parent):
                os._exit(1)
            conn.close()
            assert self.listener is not None
            self.listener.close()
            if self.standby is not None:  # kept for a later request: its socket is the zygote's alone
                self.standby.sock.close()
            os.close(status_fd)
            self.spawn(request, out_fd, [*self.children.values(), self.wake_r])
        os.close(out_fd)
        for fd in request.get("cgroup_fds", ()):
            os.close(fd)
        self.children[pid] = status_fd
        if request.get("zygote"):
            self.zygotes.add(pid)
        reply = json.dumps({"pid": pid}).encode() + b"\n"
        pidfd = _pidfd(pid)  # the server reads the child's pid in its own namespace from it
        with contextlib.suppress(OSError):  # an asker gone by now: the child runs, and is reaped, anyway
            socket.send_fds(conn, [reply], [pidfd] if pidfd is not None else [])
        if pidfd is not None:
            os.close(pidfd)
        self.reap()

    def wants_standby(self) -> bool:
        return (self.keeps_standby and self.standby is None and self.pid_namespace is not None
                and self.listener is not None and not self.retiring and not self.orphaned)

    def park(self) -> None:
        """Fork the next container ahead, while nothing else happens: it waits in `_parked` for
        the next request (`hand_over`)."""
        assert self.pid_namespace is not None
        if thread_count() > 1 + self.fork_safe_threads:  # as `receive`: such a child could deadlock
            self.pid_namespace = None
            return
        zygote = os.getpid()
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:  # out of descriptors, say: a standby is a nicety, never a reason to fail
            self.pid_namespace = None
            return
        try:
            pid, adopted = self._fork(self.pid_namespace)
        except OSError:
            ours.close()
            theirs.close()
            self.pid_namespace = None  # not again until the next request: forks fail for now
            return
        if pid == 0:
            try:  # nothing of the zygote's own loop ever runs in the child
                ours.close()
                self._parked(theirs, adopted, zygote)
            finally:
                os._exit(1)
        theirs.close()
        self.standby = Standby(pid, ours, self.pid_namespace, sandbox.ahead_key(self.sandbox))

    def _parked(self, sock: socket.socket, adopted: bool, zygote: int) -> NoReturn:
        """In a standby: hold nothing of the zygote's that others wait on, wait for a request, then
        be its container; exit when the zygote drops it (the socket's end) instead."""
        signal.signal(ORPHANED, signal.SIG_DFL)
        if not adopted and not die_with_parent(signal.SIGKILL, zygote):
            os._exit(1)
        assert self.listener is not None
        self.listener.close()
        for fd in self.children.values():  # siblings' status pipes: holding them would hide their exits
            os.close(fd)
        os.chdir("/")  # not in the app's folder, where it would look like one of its containers
        name = _comm()
        try:  # the container's sandbox now, while nothing waits for it (2.5-3 ms of a cold start)
            sandbox.enter_ahead(self.sandbox)
        except Exception as exc:  # it takes no request: the next gets a container forked for it, which says why
            print(f"[wisp] a container forked ahead could not enter its sandbox ({exc}); "
                  "the next one is forked when its request comes", file=sys.stderr, flush=True)
            os._exit(1)
        _set_comm(STANDBY_NAME.encode())
        try:
            sock.send(READY)
            data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 1 + MAX_CGROUP_FDS)
        except OSError:
            os._exit(1)
        if not data or not fds:
            os._exit(0)
        sock.close()
        _set_comm(name)
        request = json.loads(data)
        request["cgroup_fds"] = fds[1:]
        self.spawn(request, fds[0], [self.wake_r])

    def hand_over(self, request: dict[str, Any], out_fd: int, pid_namespace: bool) -> int | None:
        """Give the request to the standby: its pid, or None when there is none to take it. One
        still entering its sandbox, or entering another than the request's, is kept for the next
        request; a second request of other settings in a row drops it, so the next standby is
        made for those."""
        standby = self.standby
        if standby is None:
            return None
        if standby.pid_namespace != pid_namespace:
            self.drop_standby()
            return None
        if not standby.ready:
            try:
                said = standby.sock.recv(len(READY), socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            except OSError:
                said = b""
            if said != READY:  # it died parked (b"": the socket's end)
                self.drop_standby()
                return None
            standby.ready = True
        if standby.sandbox != sandbox.ahead_key(request):
            standby.missed += 1
            if standby.missed > 1:
                self.drop_standby()
            return None
        message = json.dumps({k: v for k, v in request.items() if k != "cgroup_fds"}).encode()
        try:
            socket.send_fds(standby.sock, [message], [out_fd, *request.get("cgroup_fds", ())])
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:  # a request larger than one message: kept for the next one
                self.drop_standby()
            return None
        self.standby = None
        standby.sock.close()
        return standby.pid

    def _fork(self, pid_namespace: bool) -> tuple[int, bool]:
        """`os.fork()`, and whether the child was adopted: in a sandboxed function zygote, a
        container is pid 1 of a pid namespace of its own. A helper forked here makes the
        namespace (a process may make one only while its children still go to its own), forks
        the container into it and exits; this zygote, pid 1 of the namespace around both,
        adopts the container, so it reaps it and reports its exit as any other child's."""
        if not pid_namespace:
            return os.fork(), False
        read, write = os.pipe()
        helper = os.fork()
        if helper == 0:
            os.close(read)
            try:
                sandbox.new_pid_namespace()
                child = os.fork()
            except BaseException:
                os._exit(1)
            if child == 0:
                os.close(write)
                return 0, True
            try:
                os.write(write, str(child).encode())
            finally:
                os._exit(0)
        os.close(write)
        # Not waited for: tearing down the helper's copy of this zygote's memory takes 1-2 ms
        # (more with numpy and pandas imported), which the cold start need not wait for. `reap`.
        self.helpers.add(helper)
        try:
            answer = os.read(read, 32)
        finally:
            os.close(read)
        if not answer:
            raise OSError(errno.EAGAIN, "the helper could not make a pid namespace")
        return int(answer), False

    def reap(self) -> None:
        while self.children or self.helpers or self.standby is not None:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.children.pop(pid, None)
            self.zygotes.discard(pid)
            self.helpers.discard(pid)
            if self.standby is not None and self.standby.pid == pid:  # it died parked
                self.drop_standby()
                self.pid_namespace = None  # no other until the next request, in case it dies again
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.write(fd, encode(Exited(os.waitstatus_to_exitcode(status))))
                os.close(fd)


def _pidfd(pid: int) -> int | None:
    """A pidfd of the child: the pid in the reply is this zygote's view, which a sandboxed
    function zygote (pid 1 of a pid namespace) does not share with the server."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _container(request: dict[str, Any], out_fd: int, inherited: list[int]) -> NoReturn:
    """A container that imports the user's script itself (forked from an image's zygote)."""
    from .__main__ import main

    _run_child(request, out_fd, inherited, lambda: main(["--start", str(request["start"])]))


def _image_spawn(request: dict[str, Any], out_fd: int, inherited: list[int]) -> NoReturn:
    if request.get("zygote"):
        _run_child(request, out_fd, inherited, lambda: _function_zygote(request))
    if request.get("module"):  # Modal's entrypoint, unmodified, as `python -m` would run it
        _run_child(request, out_fd, inherited, lambda: _run_module(str(request["module"])))
    _container(request, out_fd, inherited)


def _run_module(name: str) -> None:
    """`python -m name` in a forked child: its folder (the request's cwd) first on sys.path."""
    sys.path[0] = os.getcwd()
    runpy.run_module(name, run_name="__main__", alter_sys=True)


def _function_zygote(request: dict[str, Any]) -> None:
    """Import the script once and load each of the request's functions (`functions`, else the
    Start's), then fork containers of any of them (they only serve)."""
    from .__main__ import Loaded, load, serve

    sockets = socket_fds()
    start = Start.from_arg(str(request["start"]))
    first = load(start)
    loaded: dict[str, Loaded] = {start.function: first}
    for name in request.get("functions") or ():
        if name not in loaded:
            loaded[name] = load(replace(start, function=str(name)), first.module)
    gc.collect()
    fork_safe = fork_safe_threads()
    reason = unforkable(sockets, fork_safe)
    if reason is not None:
        print(encode_line(Unforkable(reason)), flush=True)
        return

    def spawn(container: dict[str, Any], out_fd: int, inherited: list[int]) -> NoReturn:
        _run_child(container, out_fd, inherited, lambda: _serve(Start.from_arg(str(container["start"]))))

    def _serve(args: Start) -> None:
        """In the container, with its function's own environment, folder and uid (`_become`)."""
        ready = loaded.get(args.function)
        serve(ready if ready is not None else load(args, first.module), args)

    zygote = Zygote(str(request["zygote"]), spawn, fork_safe, standby=True)
    gc.freeze()  # what exists now stays shared: the children's collections skip it
    print(encode_line(ZygoteReady()), flush=True)
    zygote.serve()


def main() -> None:
    parser = argparse.ArgumentParser(prog="wisp-zygote")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent", type=int, help="the server's pid: this zygote dies with it")
    args = parser.parse_args()
    if args.parent is not None and not die_with_parent(ORPHANED, args.parent):
        sys.exit(1)  # the server is gone already
    os.chdir("/")
    missing = preload()
    preload_modal()
    warm_up()
    gc.collect()
    zygote = Zygote(args.socket, _image_spawn, parent=args.parent)
    gc.freeze()
    print(json.dumps({"ready": True, "pid": os.getpid(), "missing": missing}), flush=True)
    zygote.serve()


if __name__ == "__main__":
    main()

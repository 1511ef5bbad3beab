"""`@wisp.web_server(port)` inside the container: start the user's server, wait for its port,
then pass the gateway's connections to it byte for byte.

The agent calls the decorated function (in a thread, so one that serves forever works as well as
one that starts a subprocess and returns), waits until the port accepts connections (at most the
decorator's `startup_timeout`), and then serves a plain byte proxy from its Unix socket to
127.0.0.1:<port>: HTTP, keep-alive and WebSocket upgrades all pass through unparsed, with flow
control both ways (`Pipe`).

Ports on the local runtime: containers share the machine's network, so two containers of one
function cannot both listen on the declared port. The agent therefore tells the server its port
in `$PORT`: the declared port when it is free, otherwise (another container of this function has
it, say the previous version's while it drains) a free port chosen here. A server that listens
on `$PORT` works with any number of containers; one with the port written into it works with one
container at a time (web_server functions take 1000 concurrent requests per container by
default, so the autoscaler rarely wants a second).
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .._protocol import tcp_address
from .._spec import FunctionSpec
from ._lifecycle import STOP_SIGNALS, StopSignals
from ._pipe import Pipe

POLL = 0.02  # seconds between attempts to connect to the user's port while it starts
_HOSTS = ("127.0.0.1", "::1")  # where a server on "this machine" can be reached


class StartupFailed(Exception):
    """The user's server did not come up; the message (the container's last line) says why."""


def claim(port: int) -> bool:
    """Claim `port` for this container among wisp containers on this machine: an exclusive lock
    on a file named after it, held (and released by the kernel) for the life of this process.

    Checking that the port is free is not enough on its own: containers starting together would
    all see it free before any server had bound it.
    """
    folder = os.path.join(tempfile.gettempdir(), "wisp-ports")
    try:
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
            os.chmod(folder, 0o1777)  # shared by every user's containers, like /tmp itself
        fd = os.open(os.path.join(folder, f"{port}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return True  # no way to coordinate here: the check that the port is free must do
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _claims.append(fd)  # kept open: the lock lasts as long as the process
    return True


_claims: list[int] = []


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` (SO_REUSEADDR, as servers set: TIME_WAIT is no obstacle)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def choose_port(declared: int, name: str) -> int:
    if claim(declared) and port_is_free(declared):
        return declared
    port = free_port()
    claim(port)
    print(f"web_server `{name}`: port {declared} is in use on this machine (another container of this "
          f"function?); this container's server is given PORT={port}. Listen on $PORT to run several "
          "containers at once.", file=sys.stderr, flush=True)
    return port


class Starter:
    """Runs the decorated function in a daemon thread and keeps what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self.returned = False
        self._thread = threading.Thread(target=self._run, args=(fn,), name="wisp-web-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            result = fn()
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except BaseException as exc:
            self.error = exc
        else:
            self.returned = True


async def _awaited(awaitable: Any) -> None:
    await awaitable


def connectable(port: int) -> str | None:
    """The host on which something accepts connections at `port`, or None."""
    for host in _HOSTS:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return host
        except OSError:
            continue
    return None


def wait_for_port(port: int, timeout: float, starter: Starter, name: str, stop: StopSignals) -> str:
    deadline = time.monotonic() + timeout
    while True:
        host = connectable(port)
        if host is not None:
            return host
        if starter.error is not None:
            exc = starter.error
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            raise StartupFailed(f"web_server `{name}` raised {type(exc).__name__}: {exc} "
                                f"before its server listened on port {port}.")
        if stop.received:
            raise StartupFailed(f"web_server `{name}` was stopped before its server listened on port {port}.")
        if time.monotonic() >= deadline:
            raise StartupFailed(
                f"web_server `{name}` did not listen on port {port} within startup_timeout={timeout:g} s. "
                f"Make the server it starts listen on 127.0.0.1 or 0.0.0.0 port {port} (it is in $PORT), "
                "or raise startup_timeout.")
        time.sleep(POLL)


async def proxy(socket_path: str, host: str, port: int, ready_line: str) -> None:
    """Serve the Unix socket until SIGTERM/SIGINT, each connection piped to host:port."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    open_pipes: set[Pipe] = set()

    def lost(end: Pipe, exc: Exception | None) -> None:
        open_pipes.discard(end)

    async def connect(outer: Pipe) -> None:
        try:
            _, inner = await loop.create_connection(lambda: Pipe(lost), host, port)
        except OSError as exc:
            print(f"web_server: cannot connect to {host}:{port}: {exc}", file=sys.stderr, flush=True)
            outer.close()  # the gateway answers 502
            return
        open_pipes.add(inner)
        outer.link(inner)

    def accepted() -> Pipe:
        outer = Pipe(lost)
        open_pipes.add(outer)
        task = loop.create_task(connect(outer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return outer

    tasks: set[asyncio.Task[None]] = set()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping.set)
    address = tcp_address(socket_path)
    if address is None:
        server = await loop.create_unix_server(accepted, socket_path)
    else:  # a container on a cluster's node
        server = await loop.create_server(accepted, address[0], address[1])
    try:
        print(ready_line, flush=True)
        await stopping.wait()
    finally:
        # The pool stops a container only once it has no request in flight: nothing is cut.
        server.close()
        for end in list(open_pipes):
            end.abort()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        await server.wait_closed()


def serve(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], spec: FunctionSpec, socket_path: str,
          ready_line: str, stop: StopSignals) -> None:
    """Start the user's server, wait for its port, proxy to it until told to stop."""
    web = spec.web
    assert web is not None and web.port is not None
    port = choose_port(web.port, spec.name)
    os.environ["PORT"] = str(port)  # the user's server, and whatever it starts, can read it
    starter = Starter(fn)
    starter.start()
    try:
        host = wait_for_port(port, web.startup_timeout, starter, spec.name, stop)
    except StartupFailed as exc:
        print(str(exc), file=sys.stderr, flush=True)  # the last line: what waiting requests see
        end_process_group()
        sys.exit(1)
    if stop.received:
        return
    try:
        loop.run_until_complete(proxy(socket_path, host, port, ready_line))
    finally:
        stop.reinstall()  # remove_signal_handler left the defaults; the exit hooks still run


def end_process_group() -> None:
    """Stop what the user's function started (its server) when the container ends on its own.

    Only when this process leads its own group (the local runtime starts it so): never signal
    a group that is not the container's.
    """
    if os.getpgrp() != os.getpid():
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgrp(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)

"""The server process: gateway + control plane + app manager on one event loop.

Started in the background by `wisp server start` (or by `serve`/`deploy` when none is running):
`python -m wisp.server --home H --port P`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import io
import ipaddress
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import uvicorn

import wisp

from .._config import (
    ALIVE_LOCK,
    INSECURE_ENV,
    SERVER_FILE,
    ServerInfo,
    disk_full_message,
    disk_problem,
    is_disk_full,
    read_token,
    write_server_info,
)
from . import build_sandbox
from .apps import AppManager, ManagerConfig
from .bundles import BundleLimits
from .control import build_control_app
from .gateway import Gateway, Target
from .images import BUILDERS, get_builder
from .isolation import isolation_problem, secure_home, uid_settings
from .logs import UnfailingStream, check_log_max_bytes
from .modal_api.start import ModalAPI, start_modal_api
from .pool import STOP_GRACE, PoolConfig
from .recovery import DamagedState, open_store
from .runtime import Runtime, get_runtime, groups
from .runtime.cluster.runtime import ClusterRuntime
from .runtime.limits import LIMITS_ENV, defaults_from_env
from .runtime.release import bound_from_env as zygote_memory_bound
from .runtime.sandbox import SandboxRuntime
from .runtime.slots import Slots, remove_now
from .store import Store, StoreURL, parse_store_url
from .uid_claims import UidClaims, claim_held

TICK = 1.0  # seconds between idle checks; idle scale-down is precise to about this
DEFAULT_GRACE = 30.0  # seconds in-flight requests and WebSockets get when the server stops
ABANDON_GRACE = 15.0  # seconds a failed start gets to stop what it started


class _AdminServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the server process owns SIGINT/SIGTERM, not the control API


def _admin_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _ticker(manager: AppManager) -> None:
    while True:
        await asyncio.sleep(TICK)
        try:
            await manager.tick()
        except Exception as exc:  # a bug in one tick must not stop idle handling for good
            print(f"wisp server: tick failed: {exc!r}", file=sys.stderr, flush=True)


def pool_config_from_env() -> PoolConfig:
    """The activator's limits: WISP_MAX_QUEUE, WISP_QUEUE_TIMEOUT (s), WISP_MAX_CONTAINERS."""
    defaults = PoolConfig()
    return PoolConfig(
        max_queue=int(os.environ.get("WISP_MAX_QUEUE", defaults.max_queue)),
        queue_timeout=float(os.environ.get("WISP_QUEUE_TIMEOUT", defaults.queue_timeout)),
        max_containers=int(os.environ.get("WISP_MAX_CONTAINERS", defaults.max_containers)),
    )


# The gateway's settings: (variable, Gateway keyword, whole number?, least value, what it is).
GATEWAY_SETTINGS = (
    ("WISP_REDIRECT_AFTER", "redirect_after", False, 0.0, "seconds, above 0"),
    ("WISP_RESULT_TTL", "result_ttl", False, 0.0, "seconds, at least 0"),
    ("WISP_BODY_TIMEOUT", "body_timeout", False, 0.0, "seconds, above 0"),
    ("WISP_MAX_CONNECTIONS", "max_connections", True, 0, "connections, 0 for no cap"),
    ("WISP_MAX_CLIENT_CONNECTIONS", "max_client_connections", True, 0, "connections, 0 for no cap"),
)


def gateway_options_from_env() -> dict[str, Any]:
    """The gateway's settings given in the environment: the redirect chain (S7: WISP_REDIRECT_AFTER,
    s without a response before the 303, default 150; WISP_RESULT_TTL, s a redirected call's result
    stays fetchable, default 600), WISP_BODY_TIMEOUT (s a request body may stall, default 30) and
    the connection caps WISP_MAX_CONNECTIONS (8192) and WISP_MAX_CLIENT_CONNECTIONS (512 per
    client address). A bad value stops the server, naming the variable."""
    options: dict[str, Any] = {}
    for env, key, whole, least, what in GATEWAY_SETTINGS:
        value = os.environ.get(env, "").strip()
        if not value:
            continue
        try:
            number: float = int(value) if whole else float(value)
        except ValueError:
            number = -1
        above = not whole and what.endswith("above 0")
        if number < least or (above and number <= least) or number != number or number == float("inf"):
            raise SystemExit(f"wisp server: {env}={value!r} must be a number of {what}; unset it for the default.")
        options[key] = number
    return options


def bundle_limits_from_env() -> BundleLimits:
    """WISP_MAX_BUNDLE_MB and WISP_MAX_UNPACKED_MB: how large a deploy's files may be."""
    try:
        return BundleLimits.from_env(os.environ)
    except ValueError as exc:
        raise SystemExit(f"wisp server: {exc}") from None


def _isolation(home: Path) -> tuple[int, int] | None:
    """The per-app uid range, or None (said once in the server log, with what to do); WISP_HOME
    and the server's files in it are closed to containers either way."""
    problem = isolation_problem(os.geteuid(), home, os.environ, [Path(wisp.__file__).parent])
    uid_range = None
    if problem is None:
        try:
            uid_range = uid_settings(os.environ)
        except ValueError as exc:
            raise SystemExit(f"wisp server: {exc}") from None
    else:
        print(f"wisp server: {problem}", flush=True)
    secure_home(home, uid_range is not None)
    return uid_range


def _limits(runtime: Runtime) -> Slots | None:
    """The cgroups that enforce containers' limits on this machine (`Slots.start` says what it
    runs without); None on a cluster (the nodes' limits are not enforced yet) or when
    WISP_LIMITS=0 asks for none (said too). An earlier run's slots are removed either way."""
    if isinstance(runtime, ClusterRuntime) or os.environ.get(LIMITS_ENV) == "0":
        remove_now(groups.stale_cgroups())
        groups.set_cgroups([])
        if not isinstance(runtime, ClusterRuntime):
            print(f"wisp server: limits: off ({LIMITS_ENV}=0): containers run without memory, pids and CPU limits",
                  flush=True)
        return None
    return Slots.start(defaults_from_env(os.environ), groups.stale_cgroups())


def shutdown_grace(value: str | None = None) -> float:
    """Seconds a stopping server lets requests in progress finish: `value` (`--grace`), else
    WISP_SHUTDOWN_GRACE, else 30."""
    name = "--grace" if value is not None else "WISP_SHUTDOWN_GRACE"
    raw = value if value is not None else os.environ.get("WISP_SHUTDOWN_GRACE", "")
    if not raw:
        return DEFAULT_GRACE
    try:
        grace = float(raw)
    except ValueError:
        grace = -1.0
    if not 0 <= grace < float("inf"):
        raise SystemExit(f"wisp server: {name}={raw!r} must be a number of seconds, 0 or more "
                         f"(the default is {DEFAULT_GRACE:g}).")
    return grace


def _hold_alive_lock(home: Path) -> int | None:
    """Held until this process exits (the kernel lets go of it even after kill -9): the CLI
    tells a server that is starting or stopping from none at all by it."""
    fd = os.open(home / ALIVE_LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def _abandon_start(manager: AppManager, admin: uvicorn.Server, admin_task: asyncio.Future[None],
                         store: Store) -> None:
    """Stop what a start that failed had started, within ABANDON_GRACE (the parent-death signals
    end whatever is left when this process exits)."""
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(manager.close(), ABANDON_GRACE)
    admin.should_exit = True
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(admin_task, ABANDON_GRACE)
    with contextlib.suppress(Exception):
        store.close()


def _claims(store: Store, where: StoreURL) -> UidClaims | None:
    """This machine's claims on app uids (uid_claims.py), with this store's own claimed: what does
    not hold is said in the server log, with what to do."""
    claims, problem = UidClaims.open(os.environ, where)
    if claims is None:
        print(f"wisp server: {problem}", flush=True)
        return None
    for app_id, uid in store.app_uids():
        if not claim_held(claims, app_id, uid):
            return None
    return claims


def _prepare(home: Path, where: StoreURL | None = None) -> tuple[str, tuple[int, int] | None, Store] | None:
    """Before anything starts: this home's alive lock, room on its disk, the admin token, the
    app uids and a usable store (`where`, else state.db). Says what is wrong and returns None otherwise."""
    if _hold_alive_lock(home) is None:
        print(f"Another wisp server is running on {home} (starting or stopping). Use it, or wait for it to stop: "
              "`wisp server status`.", file=sys.stderr, flush=True)
        return None
    problem, token = disk_problem(home), None
    try:
        if problem is None:  # before anything starts: a full disk leaves nothing running
            groups.current = groups.begin(home, [])  # and ends what an earlier run left behind
            token = read_token(home, create=True)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        problem = disk_full_message(home)
    if problem is not None:
        print(f"wisp server: {problem}", file=sys.stderr, flush=True)
        return None
    assert token is not None
    uid_range = _isolation(home)
    try:  # a damaged state.db (or an unreachable Postgres) stops here, saying what to do
        store = open_store(home, where)
    except DamagedState as exc:
        print(exc, file=sys.stderr, flush=True)
        return None
    return token, uid_range, store


async def _listen(routes: dict[str, Target], host: str, port: int, max_body_size: int) -> Gateway | None:
    """The gateway bound to its port, not yet accepting (it does once the apps are restored)."""
    gateway = Gateway(routes, max_body_size=max_body_size, **gateway_options_from_env())
    try:
        await gateway.start(host, port, serve=False)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"Port {port} is in use by another program. Either identify and stop that program, "
                  f"or start the server with a different port: `wisp server start --port {port + 1}`.",
                  file=sys.stderr, flush=True)
            return None
        raise
    return gateway


async def run(home: Path, host: str, port: int, runtime: str, max_body_size: int,
              grace: float = DEFAULT_GRACE, modal_port: int | None = None, store_url: StoreURL | None = None) -> int:
    """`modal_port`: where Modal's client API listens (None: the gateway's port + 1; 0: off);
    `store_url`: the store (None: $WISP_HOME/state.db)."""
    prepared = _prepare(home, store_url)
    if prepared is None:
        return 1
    token, uid_range, store = prepared
    routes: dict[str, Target] = {}
    gateway = await _listen(routes, host, port, max_body_size)
    if gateway is None:
        return 1
    socket_dir = tempfile.mkdtemp(prefix="wisp-")  # short: Unix socket paths max out at 107 bytes
    if uid_range is not None:
        os.chmod(socket_dir, 0o711)  # apps pass through to their own folder in it, never list it
    groups.add_folder(socket_dir)
    builder = get_builder(os.environ.get("WISP_BUILDER") or "local", home)
    builder.sandbox, notes = build_sandbox.configure(home, os.environ)
    for note in notes:
        print(f"wisp server: {note}", flush=True)
    # Containers run as their app's uid, builds as the build uid: the image's Python must be readable by others.
    builder.readable_by_others = uid_range is not None or (builder.sandbox is not None and not builder.sandbox.user_ns)
    claims = None if uid_range is None else _claims(store, store_url or parse_store_url(None, home))
    config = ManagerConfig(home, gateway.port, socket_dir, pool_config_from_env(), uid_range, bundle_limits_from_env(),
                           claims)
    try:
        chosen = get_runtime(runtime)  # auto: probes the kernel for the sandbox, and says what is missing
    except ValueError as exc:  # an unknown runtime, or WISP_SANDBOX_WITHOUT naming no piece
        print(f"wisp server: {exc}", file=sys.stderr, flush=True)
        shutil.rmtree(socket_dir, ignore_errors=True)
        store.close()
        return 1
    if isinstance(chosen, SandboxRuntime):  # nothing of the home, nor other apps' sockets, in a sandbox
        chosen.hide(str(home), socket_dir)
    if isinstance(chosen, ClusterRuntime):
        try:
            await chosen.start()  # joins the cluster, an agent on every node
        except RuntimeError as exc:
            print(f"wisp server: {exc}", file=sys.stderr, flush=True)
            await chosen.close()
            shutil.rmtree(socket_dir, ignore_errors=True)
            store.close()
            return 1
    slots = _limits(chosen)
    manager = AppManager(config, store, builder, chosen, routes, slots=slots)
    if manager.capacity.gpus.devices:  # what gpu= functions are matched against (docs/gpus.md)
        print(f"wisp server: GPUs: {manager.capacity.gpus.describe()}, from {manager.capacity.gpus.source}", flush=True)
    stop = asyncio.Event()
    force = asyncio.Event()  # a second SIGTERM/SIGINT: stop now, cutting what is left
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: (force if stop.is_set() else stop).set())

    def request_stop() -> dict[str, Any]:
        stop.set()
        return {"grace": grace, "busy": gateway.busy()}

    admin_sock = _admin_socket()
    info = ServerInfo(os.getpid(), host, gateway.port, admin_sock.getsockname()[1], store=store.kind)
    manager.control_url = info.admin_url
    admin = _AdminServer(uvicorn.Config(build_control_app(manager, token, request_stop, {"gateway_port": gateway.port, "runtime": chosen.name},
                                                          max_body_size),
                                        log_level="warning", access_log=False, lifespan="off"))
    admin_task = asyncio.ensure_future(admin.serve(sockets=[admin_sock]))
    modal_api: ModalAPI | None = None
    try:
        await manager.restore()
        # Only now: a deployed URL is refused while its app is restored, never answered 404.
        await gateway.serve()
        modal_api = await start_modal_api(manager, home, gateway.port + 1 if modal_port is None else modal_port)
        info = dataclasses.replace(info, modal_port=modal_api.port if modal_api is not None else 0)
        write_server_info(home, info)
    except BaseException as exc:  # a failed start leaves nothing running
        if modal_api is not None:
            await modal_api.close()
        await _abandon_start(manager, admin, admin_task, store)
        shutil.rmtree(socket_dir, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            print(f"wisp server: {disk_full_message(home)}", file=sys.stderr, flush=True)
            return 1
        raise
    print(f"wisp server {info.pid}: gateway on http://{host}:{gateway.port}, control API on {info.admin_url}", flush=True)
    if modal_api is not None:
        print(f"wisp server: Modal's client API on {modal_api.url} (`eval \"$(wisp modal env)\"` points the modal "
              "CLI at it)", flush=True)
    ticker = asyncio.ensure_future(_ticker(manager))
    try:
        await stop.wait()
    finally:
        (home / SERVER_FILE).unlink(missing_ok=True)
        if modal_api is not None:  # no new Modal calls while the apps drain
            await modal_api.close()
        await _shut_down(gateway, manager, grace, force, ticker)
        admin.should_exit = True
        admin.force_exit = force.is_set()
        await admin_task
        store.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
        print("wisp server: stopped", flush=True)
    return 0


async def _shut_down(gateway: Gateway, manager: AppManager, grace: float, force: asyncio.Event,
                     ticker: asyncio.Future[None]) -> None:
    """Drain, then stop the containers (their exit hooks run), then return; `force` cuts short.

    The order matters: containers get SIGTERM only once the gateway has no request left for
    them, so uvicorn in each finds nothing in flight and the exit hooks run right after.
    """
    busy = gateway.busy()
    print(f"wisp server: stopping; {busy} request(s) in progress get up to {grace:g} s to finish "
          "(a second SIGTERM or Ctrl-C stops at once)", flush=True)
    started = time.monotonic()
    drain = asyncio.ensure_future(gateway.drain(grace))
    if await _finished(drain, force):
        drained = drain.result()
        print(f"wisp server: drained in {time.monotonic() - started:.1f} s: {drained.busy} busy connection(s); "
              f"at the end of the grace period {drained.answered_503} request(s) answered 503, "
              f"{drained.cut} response(s) or WebSocket(s) cut", flush=True)
    else:
        drain.cancel()
        print("wisp server: forced to stop; cutting every connection", flush=True)
    ticker.cancel()  # the pools keep scaling while they drain, not while they stop
    await gateway.close()
    closing = asyncio.ensure_future(manager.close(grace=0 if force.is_set() else STOP_GRACE))
    if not await _finished(closing, force):
        print("wisp server: forced to stop; killing the containers without their exit hooks", flush=True)
        manager.kill()
        await closing
    print(f"wisp server: containers stopped {time.monotonic() - started:.1f} s after the stop began", flush=True)


async def _finished(task: asyncio.Future[Any], force: asyncio.Event) -> bool:
    """Wait for `task`; False if `force` was set first (the task is left running)."""
    forced = asyncio.ensure_future(force.wait())
    await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    return task.done()


def host_refusal(host: str, insecure: bool) -> str | None:
    """Why the gateway must not listen on `host`, or None. Off loopback, apps and their proxy-auth
    keys would cross the network in clear text: only with an explicit --insecure."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback or insecure:
        return None
    return (f"--host {host} would serve apps to other machines over plain HTTP, and wisp has no TLS yet. "
            "Keep the default 127.0.0.1 behind a TLS proxy (nginx, caddy), or pass --insecure "
            f"({INSECURE_ENV}=1) to serve plain HTTP on a network you trust.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wisp.server")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime", default=os.environ.get("WISP_RUNTIME", "auto"),
                        help="container runtime: auto (sandbox where the kernel allows it, else zygote), zygote, sandbox (zygote's forks in "
                             "namespaces of their own, with seccomp; Linux), local, or ray (the nodes of the Ray cluster "
                             "at --ray-address)")
    parser.add_argument("--ray-address", default=os.environ.get("WISP_RAY_ADDRESS"),
                        help="the Ray cluster's address for --runtime ray ($WISP_RAY_ADDRESS)")
    parser.add_argument("--max-body-size", type=int, default=int(os.environ.get("WISP_MAX_BODY_SIZE", 100 * 1024 * 1024)))
    parser.add_argument("--modal-port", type=int, default=_env_int("WISP_MODAL_PORT"),
                        help="port of Modal's client API on 127.0.0.1 (default: the gateway's port + 1; 0: off)")
    parser.add_argument("--grace", help="seconds in-flight requests get when the server stops "
                                        "(default 30, $WISP_SHUTDOWN_GRACE)")
    parser.add_argument("--store", default=os.environ.get("WISP_STORE"),
                        help="store URL: sqlite:///PATH (default $WISP_HOME/state.db) or postgresql://... "
                             "($WISP_STORE, which keeps a password out of the process list)")
    parser.add_argument("--insecure", action="store_true", default=os.environ.get(INSECURE_ENV) == "1",
                        help="serve a non-loopback --host over plain HTTP")
    args = parser.parse_args(argv)
    if args.ray_address:
        os.environ["WISP_RAY_ADDRESS"] = args.ray_address  # read by the ray runtime
    refused = host_refusal(args.host, args.insecure)
    if refused is not None:
        sys.exit(f"wisp server: {refused}")
    home = args.home.resolve()
    try:
        store_url = parse_store_url(args.store, home)
    except ValueError as exc:
        sys.exit(f"wisp server: --store/WISP_STORE: {exc}.")
    gateway_options_from_env()  # a bad setting stops the server here, with its name
    bundle_limits_from_env()
    try:
        zygote_memory_bound()
        defaults_from_env(os.environ)  # the containers' default limits
    except ValueError as exc:
        sys.exit(f"wisp server: {exc}")
    if (os.environ.get("WISP_BUILDER") or "local") not in BUILDERS:
        sys.exit(f"WISP_BUILDER={os.environ['WISP_BUILDER']!r} is not an image builder; choose one of: "
                 f"{', '.join(sorted(BUILDERS))}, or unset it.")
    check_log_max_bytes()
    # server.log on a full disk: drop lines, never raise (the streams are text files: TextIOBase)
    sys.stdout = UnfailingStream(cast(io.TextIOBase, sys.stdout))
    sys.stderr = UnfailingStream(cast(io.TextIOBase, sys.stderr))
    grace = shutdown_grace(args.grace)
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass  # the standard loop (uvloop is not built for every platform)
    sys.exit(asyncio.run(run(home, args.host, args.port, args.runtime, args.max_body_size, grace,
                             args.modal_port, store_url)))


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a port number; give one (0 turns it off), or unset it.") from None

"""`wisp server start|stop|status|backup|restore`: the background server on this WISP_HOME."""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._config import INSECURE_ENV, START_LOCK, default_port, read_server_info, wisp_home
from .._session import output as _output
from ..client import (
    DEFAULT_GRACE,
    STOP_MARGIN,
    Client,
    ClientError,
    _locked,
    connect,
    ensure_server,
    server_alive,
    shutdown,
    wait_for,
)
from ..server import recovery
from ..server.store import StoreError, StoreURL, parse_store_url

# How long `server stop` waits beyond the server's grace period: its containers get 10 s
# (pool.STOP_GRACE) for exit hooks once the gateway has drained, the zygotes a few more.


def grace_seconds(value: str) -> float:
    """`--grace`: a number of seconds, 0 or more."""
    try:
        grace = float(value)
    except ValueError:
        grace = -1.0
    if not 0 <= grace < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds; give one, 0 or more (e.g. --grace 30).")
    return grace


def running(hint: str = "run `wisp deploy script.py`") -> Client | None:
    """The server on this WISP_HOME, or None after saying that none runs and what to do."""
    client = connect(wisp_home())
    if client is None:
        _output.fail(f"No wisp server is running. Start one with `wisp server start`, or {hint}.")
    return client


def request(method: str, path: str, done: str | Callable[[dict[str, Any]], str],
            hint: str = "run `wisp deploy script.py`") -> int:
    """One control API request to the running server; say `done` (or `done(answer)`) or what went
    wrong. An exit code."""
    client = running(hint)
    if client is None:
        return 1
    try:
        answer = client.request(method, path)
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    _output.say(done if isinstance(done, str) else done(answer))
    return 0


def start(args: argparse.Namespace) -> int:
    home = wisp_home()
    if args.insecure:
        os.environ[INSECURE_ENV] = "1"  # the server it starts reads it
    if args.runtime:
        os.environ["WISP_RUNTIME"] = args.runtime  # likewise
    if args.ray_address:
        os.environ["WISP_RAY_ADDRESS"] = args.ray_address
    if os.environ.get("WISP_RUNTIME") == "ray" and not os.environ.get("WISP_RAY_ADDRESS"):
        _output.fail("--runtime ray needs the cluster's address: --ray-address HOST:PORT (as `ray start --head` "
                     "printed it), or WISP_RAY_ADDRESS.")
        return 1
    if args.store is not None:
        try:
            parse_store_url(args.store, home)
        except ValueError as exc:
            _output.fail(f"--store: {exc}.")
            return 1
    try:
        client, started = ensure_server(home, args.port or default_port(), args.host, args.grace, args.store)
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    if not started:
        given = [flag for flag, value in (("--grace", args.grace), ("--store", args.store), ("--runtime", args.runtime),
                                          ("--ray-address", args.ray_address)) if value is not None]
        again = (f" {' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} when a server starts: stop this "
                 "one first to change it.") if given else ""
        _output.say(f"The wisp server is already running (pid {client.info.pid}, port {client.info.gateway_port}).{again}")
        return 0
    _output.say(f"Started the wisp server (pid {client.info.pid}): gateway on http://{args.host}:{client.info.gateway_port}")
    return 0


def stop(args: argparse.Namespace) -> int:
    home = wisp_home()
    client = connect(home)
    if client is None:
        if not server_alive(home):
            _output.say("No wisp server is running.")
            return 0
        # Its server.json is gone but it still holds its alive lock: it is stopping already.
        limit = _grace_here() + STOP_MARGIN
        _output.say(f"The wisp server is already stopping; waiting up to {limit:.0f} s for it to finish.")
        if wait_for(lambda: not server_alive(home), limit):
            _output.say("The wisp server has stopped.")
            return 0
        _output.fail(f"The wisp server on {home} did not stop within {limit:.0f} s; see {home / 'server.log'}.")
        return 1
    started = time.monotonic()
    if shutdown(client, on_answer=_say_draining):
        _output.say(f"Stopped the wisp server (pid {client.info.pid}) in {time.monotonic() - started:.1f} s.")
        return 0
    return 1


def _say_draining(answer: dict[str, Any]) -> None:
    busy = answer.get("busy", 0)
    if busy:
        _output.say(f"Stopping the wisp server: {busy} request(s) in progress get up to {answer['grace']:g} s to finish.")


def _grace_here() -> float:
    """The grace a server started from this environment has (a guess for one already stopping)."""
    try:
        return grace_seconds(os.environ.get("WISP_SHUTDOWN_GRACE") or str(DEFAULT_GRACE))
    except argparse.ArgumentTypeError:
        return DEFAULT_GRACE


def status(args: argparse.Namespace) -> int:
    home = wisp_home()
    client = connect(home)
    if client is None:
        stale = read_server_info(home)
        _output.say("No wisp server is running." + (" (a stale server.json was found)" if stale else ""))
        return 1
    apps = client.request("GET", "/v1/apps")["apps"]
    running = sum(1 for a in apps if a["state"] == "running")
    runtime = client.request("GET", "/v1/health").get("runtime", "unknown")  # what `auto` chose, say
    _output.say(f"wisp server running: pid {client.info.pid}, gateway http://{client.info.host}:{client.info.gateway_port}, "
                f"control API {client.info.admin_url}, home {home}, runtime {runtime}, {running} app(s) running")
    return 0


def _backup_store(args: argparse.Namespace, home: Path) -> StoreURL | None:
    """The SQLite file `backup`/`restore` work on (--store, WISP_STORE, else state.db); None
    after saying why not (a Postgres store, a bad URL)."""
    value = args.store or os.environ.get("WISP_STORE")
    info = read_server_info(home)
    if value is None and info is not None and info.store != "sqlite" and server_alive(home):
        _output.fail(f"The wisp server running on {home} keeps its store in Postgres: backups of a Postgres store are "
                     "Postgres's own: use pg_dump (`pg_dump -Fc URL > wisp.dump`) and pg_restore to restore it.")
        return None
    try:
        where = parse_store_url(value, home)
    except ValueError as exc:
        _output.fail(f"--store/WISP_STORE: {exc}.")
        return None
    refusal = recovery.backup_refusal(where)
    if refusal is not None:
        _output.fail(refusal)
        return None
    return where


def backup(args: argparse.Namespace) -> int:
    """An online backup of state.db (the server may be running), 0600; prints where it went."""
    home = wisp_home()
    where = _backup_store(args, home)
    if where is None or where.path is None:
        return 1
    target = Path(args.path).expanduser().resolve() if args.path else None
    if target is not None and target.exists() and not target.is_dir():
        _output.fail(f"{target} exists already. Name a new file, or a folder to put a timestamped backup in.")
        return 1
    try:
        path = recovery.take_backup(home, target, source=where.path)
    except (StoreError, OSError) as exc:
        _output.fail(f"Could not back up {where.path}: {exc}.")
        return 1
    _output.say(f"Backed up {where.path} to {path}")
    return 0


def restore(args: argparse.Namespace) -> int:
    """Put a backup in place of state.db while no server runs (the replaced file is kept)."""
    home = wisp_home()
    where = _backup_store(args, home)
    if where is None or where.path is None:
        return 1
    with _locked(home / START_LOCK):  # no CLI starts a server on the file while it is replaced
        if server_alive(home):
            _output.fail(f"A wisp server is running on {home}. Stop it first (`wisp server stop`), then restore.")
            return 1
        chosen = Path(args.backup).expanduser().resolve() if args.backup else recovery.newest_backup(home)
        if chosen is None or not chosen.is_file():
            _output.fail(f"No backup {'at ' + str(chosen) if chosen else 'in ' + str(home / recovery.BACKUPS)}. "
                         "Name one: `wisp server restore PATH` (`wisp server backup` makes them).")
            return 1
        try:
            kept = recovery.restore(home, chosen, where.path)
        except (StoreError, OSError) as exc:
            _output.fail(f"{chosen} cannot be restored: {exc}. Pick another backup (`ls {home / recovery.BACKUPS}`).")
            return 1
    replaced = f"; the file it replaced is kept as {kept}" if kept else ""
    _output.say(f"Restored {where.path} from {chosen}{replaced}. Start the server: `wisp server start`.")
    return 0

"""Serving an ephemeral app that follows its script's edits until Ctrl-C: `wisp serve script.py`
and `stub.serve()`. Returns when the app stops; never exits the process (a notebook or a script
calling `stub.serve()` goes on after it)."""
from __future__ import annotations

import _thread
import signal
import sys
import threading
import uuid
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import watchfiles

from ..client import Client, ClientError, shutdown
from ..exception import ExecutionError, InvalidError
from . import output as _output
from . import push as _common
from .package import PackageError, Target, source_dirs

if TYPE_CHECKING:
    from .._app import Stub

HEARTBEAT_EVERY = 2.0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _heartbeats(client: Client, app_id: str, owner: str, done: threading.Event) -> None:
    """Keep the ephemeral app alive; the server stops it if these stop (kill -9, closed terminal)."""
    while not done.wait(HEARTBEAT_EVERY):
        try:
            client.request("POST", f"/v1/apps/{app_id}/heartbeat?owner={owner}", {}, timeout=10)
        except ClientError as exc:
            if exc.status in (404, 409):
                _output.fail(f"{exc.message} Stopping this `wisp serve`.")
                done.set()
                _thread.interrupt_main()
                return


def _watch_filter(change: watchfiles.Change, path: str) -> bool:
    name = Path(path).name
    return not (name.startswith(".") or name.endswith((".pyc", "~", ".swp")) or "__pycache__" in path)


def _update(client: Client, target: Target, owner: str) -> None:
    try:
        app = _common.push(client, target, "serve", owner)
    except PackageError as exc:
        _output.fail(f"{exc.args[0]}\nThe previous version keeps serving; fix the script and save again.")
        return
    except ClientError as exc:
        _output.fail(f"{exc.message}\nThe previous version keeps serving.")
        return
    _output.say(f"Updated {app['name']} (version {app['version']}).")


def serve(target: Target, port: int | None) -> None:
    """Serve until Ctrl-C (or SIGTERM, or the server stopping the app), then stop the app.
    Raises InvalidError for a script that cannot be imported, ExecutionError when the server
    cannot be started or refuses the app."""
    owner = uuid.uuid4().hex
    try:
        client, started, app = _common.server_and_push(port, target, "serve", owner)
    except PackageError as exc:
        raise InvalidError(exc.args[0]) from None
    except ClientError as exc:
        raise ExecutionError(exc.message) from None
    _output.say(f"Serving ephemeral app {app['name']}. Its endpoints:")
    _output.endpoints(app)
    root = target.script.parent
    _output.say(f"Watching {root} for changes. Ctrl-C stops the app.")
    done = threading.Event()
    beat = threading.Thread(target=_heartbeats, args=(client, app["id"], owner, done), daemon=True)
    beat.start()
    # Both, explicitly: a shell starting us in the background may have left SIGINT ignored.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watched = list(dict.fromkeys([*source_dirs(root), *(Path(d) for d in app.get("watch", []) if Path(d).is_dir())]))
        for changes in watchfiles.watch(*watched, watch_filter=_watch_filter, recursive=False,
                                        stop_event=done, debounce=400, step=50, rust_timeout=500):
            names = sorted({Path(p).name for _, p in changes})
            _output.say(f"Change in {', '.join(names)}; updating.")
            _update(client, target, owner)
    except KeyboardInterrupt:
        pass
    finally:
        done.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop(client, app["id"], owner, stop_server=started)


def _stop(client: Client, app_id: str, owner: str, *, stop_server: bool) -> None:
    """Stop the app; and the server too if this command started it and nothing else runs there."""
    try:
        client.request("DELETE", f"/v1/apps/{app_id}?owner={owner}", timeout=60)
        _output.say("Stopped the app and its containers.")
        if stop_server and shutdown(client, if_idle=True):
            _output.say("Stopped the wisp server this command started (no other app was running).")
    except ClientError as exc:
        _output.fail(f"Could not stop the app: {exc.message}")


def serve_stub(stub: Stub, *, port: int | None = None) -> None:
    """`stub.serve()`: serve the script that defines `stub` (normally `__main__`)."""
    module = _defining_module(stub)
    attr = next((name for name, value in vars(module).items() if value is stub), None)
    script = getattr(module, "__file__", None)
    if script is None or attr is None:
        raise InvalidError("stub.serve() needs the stub to be a module-level name in a script file. "
                           "Run `wisp serve script.py` instead.")
    serve(Target(Path(script).resolve(), attr), port)


def _defining_module(stub: Stub) -> Any:
    defined_in = sys.modules.get(stub._module or "")
    if defined_in is not None and any(value is stub for value in vars(defined_in).values()):
        return defined_in
    for module in (sys.modules.get("__main__"), *sys.modules.values()):
        if module is not None and any(value is stub for value in vars(module).values()):
            return module
    return sys.modules["__main__"]

"""The container agent: `python -m wisp._runtime --start <Start as JSON>` (`wisp._protocol`).

Imports the user's script, runs the enter hooks of a class's instance, builds the function's ASGI
app, serves it with uvicorn on a Unix socket, and prints a `Ready` message on stdout once it
accepts connections. SIGTERM drains, then the exit hooks run. A web_server function is called to start
the user's own server instead, and the socket is a byte proxy to its port (`_web_server`).

`load` (import, find the function, build a webhook's app) and `serve` (the rest) are apart so
that a function's zygote can load once and fork containers that only serve (`zygote.py`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from .._protocol import Ready, Start, Stopping, encode_line, tcp_address

if TYPE_CHECKING:
    from .._app import Stub
    from .._spec import FunctionSpec

def parse(argv: list[str], *, container: bool = True) -> Start:
    """The agent's one argument, `--start <json>`; a function's zygote has no socket of a
    container to serve on."""
    parser = argparse.ArgumentParser(prog="wisp-container")
    parser.add_argument("--start", required=True, help="the Start message (wisp._protocol), as JSON")
    start = Start.from_arg(parser.parse_args(argv).start)
    if container and not start.socket:
        parser.error("a container's Start needs its socket")
    return start


@dataclass
class Loaded:
    """The user's function, imported and ready to serve: what a function's zygote keeps."""

    workdir: Path
    module: ModuleType
    stub: Stub
    fn: Any
    spec: FunctionSpec
    klass: type | None  # a class's method: one instance per container, made after the fork
    app: Any  # a webhook's app, built once (it runs no user code); else built per container
    config: Any  # uvicorn's Config of `app`, loaded, when there is one (`server_config`)


def load(args: Start, module: ModuleType | None = None) -> Loaded:
    """Import the user's script and find the function: everything before the first user hook.
    `module`: the script, imported already (another function of it was loaded)."""
    from ._asgi import build_app, with_errors, with_root_path
    from ._lifecycle import find_class
    from ._load import find_stub, import_script

    directory = Path(args.directory).resolve()
    workdir = Path(os.environ.get("WISP_WORKDIR") or directory)  # the image's workdir(), else the app's folder
    os.chdir(workdir)
    if module is None:
        module = import_script(directory, args.module)
    _, stub = find_stub(module, args.stub)
    fn, spec = stub._functions[args.function]
    klass = None if spec.cls is None else find_class(module, stub, spec.cls)
    app = None
    if klass is None and spec.web is None:
        from ._invoke import invoke_app

        app = invoke_app(fn, spec)  # a called function: `.remote()`, `.map()`, `.spawn()`
    elif klass is None and spec.web is not None and spec.web.kind == "webhook":
        app = with_root_path(with_errors(build_app(fn, spec), spec.name))
    return Loaded(workdir, module, stub, fn, spec, klass, app, None if app is None else server_config(app, spec))


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    serve(load(args), args)


def serve(loaded: Loaded, args: Start) -> None:
    """Run enter hooks, serve on the container's socket until told to stop, run exit hooks."""
    from ._lifecycle import StopSignals, close_loop, enter, new_loop, run_exits

    os.chdir(loaded.workdir)
    spec = loaded.spec
    loop = new_loop()
    # Enter runs before uvicorn binds its socket, so before Ready: the pool counts this
    # container ready (and the warm pool warm) only once it has finished (S12).
    entering = time.monotonic()
    instance = None if loaded.klass is None else enter(loop, loaded.klass)
    ready_line = encode_line(Ready(None if instance is None else time.monotonic() - entering))
    with StopSignals() as stop:
        try:
            handler = loaded.fn if instance is None else getattr(instance, str(spec.method_name))
            if spec.web is not None and spec.web.kind == "web_server":
                from . import _web_server

                if not stop.received:
                    _web_server.serve(loop, handler, spec, str(args.socket), ready_line, stop)
            else:
                config = loaded.config or server_config(_app_for(handler, spec), spec)
                if not stop.received:
                    loop.run_until_complete(_server(config, args, ready_line).serve())
        finally:  # after a drain, a startup error or a factory that raised alike
            if instance is not None:
                print(encode_line(Stopping()), flush=True)
                run_exits(loop, instance)
    close_loop(loop)


def _app_for(handler: Any, spec: FunctionSpec) -> Any:
    """The app of a container whose function zygote could not build it (a class's method, a factory)."""
    from ._asgi import build_app, with_errors, with_root_path

    if spec.web is None:
        from ._invoke import invoke_app

        return invoke_app(handler, spec)
    return with_root_path(with_errors(build_app(handler, spec), spec.name))


def server_config(app: Any, spec: FunctionSpec) -> Any:
    """uvicorn's Config for a container's app, loaded: its logging set up and the app wrapped. A
    function's zygote builds it once with the app, and its containers only say where to listen
    (`_server`): about 3 ms less of each cold start (docs/profiling.md)."""
    import uvicorn

    from ._asgi import with_inputs

    config = uvicorn.Config(
        with_inputs(app, spec.allow_concurrent_inputs),  # requests handed ahead wait here (autoscaler.standby_slots)
        lifespan=lifespan(spec),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=spec.timeout,
    )
    config.load()
    return config


def lifespan(spec: FunctionSpec) -> Literal["auto", "off"]:
    """uvicorn's lifespan setting: "auto" for a user's own ASGI app only. A WSGI app has no
    lifespan, and the apps wisp builds (a webhook's FastAPI app, a called function's) have no
    startup or shutdown to run; running their lifespan took about 1.5 ms of a cold start."""
    return "auto" if spec.web is not None and spec.web.kind == "asgi" else "off"


def _server(config: Any, args: Start, ready_line: str) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(ready_line, flush=True)  # the pool reads the enter hooks' time for its metrics

    assert args.socket is not None
    if (address := tcp_address(args.socket)) is not None:  # a container on a cluster's node
        config.host, config.port = address
    else:
        config.uds = args.socket
    config.timeout_keep_alive = args.timeout_keep_alive
    return Server(config)


if __name__ == "__main__":
    main()

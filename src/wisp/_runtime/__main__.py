"""The container agent: `python -m wisp._runtime --dir D --module M --function F --socket S`.

Imports the user's script, runs the enter hooks of a class's instance, builds the function's ASGI
app, serves it with uvicorn on a Unix socket, and prints READY_MARKER on stdout once it accepts
connections. SIGTERM drains, then the exit hooks run. A web_server function is called to start
the user's own server instead, and the socket is a byte proxy to its port (`_web_server`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._spec import FunctionSpec

READY_MARKER = "\x00wisp-ready"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wisp-container")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--module", required=True)
    parser.add_argument("--stub", required=True)
    parser.add_argument("--function", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--timeout-keep-alive", type=int, default=75)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(sys.argv[1:] if argv is None else argv)
    from ._asgi import build_app, with_errors, with_root_path
    from ._lifecycle import StopSignals, close_loop, enter, find_class, new_loop, run_exits
    from ._load import find_stub, import_script

    directory = args.dir.resolve()
    os.chdir(os.environ.get("WISP_WORKDIR") or directory)  # the image's workdir(), else the app's folder
    module = import_script(directory, args.module)
    _, stub = find_stub(module, args.stub)
    fn, spec = stub._functions[args.function]
    loop = new_loop()
    # Enter runs before uvicorn binds its socket, so before READY_MARKER: the pool counts this
    # container ready (and the warm pool warm) only once it has finished (S12).
    entering = time.monotonic()
    instance = None if spec.cls is None else enter(loop, find_class(module, stub, spec.cls))
    ready_line = READY_MARKER if instance is None else f"{READY_MARKER} enter={time.monotonic() - entering:.6f}"
    with StopSignals() as stop:
        try:
            handler = fn if instance is None else getattr(instance, str(spec.method_name))
            if spec.web is not None and spec.web.kind == "web_server":
                from . import _web_server

                if not stop.received:
                    _web_server.serve(loop, handler, spec, args.socket, ready_line, stop)
            else:
                app = with_root_path(with_errors(build_app(handler, spec), spec.name))
                if not stop.received:
                    loop.run_until_complete(_server(app, spec, args, ready_line).serve())
        finally:  # after a drain, a startup error or a factory that raised alike
            if instance is not None:
                run_exits(loop, instance)
    close_loop(loop)


def _server(app: Any, spec: FunctionSpec, args: argparse.Namespace, ready_line: str) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(ready_line, flush=True)  # the pool reads enter=<seconds> for its metrics

    config = uvicorn.Config(
        app,
        uds=args.socket,
        lifespan="off" if spec.web and spec.web.kind == "wsgi" else "auto",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_graceful_shutdown=spec.timeout,
    )
    return Server(config)


if __name__ == "__main__":
    main()

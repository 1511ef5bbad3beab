"""The container agent: `python -m wisp._runtime --dir D --module M --function F --socket S`.

Imports the user's script, builds the function's ASGI app, serves it with uvicorn on a Unix
socket, and prints READY_MARKER on stdout once it accepts connections. SIGTERM drains.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

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
    import uvicorn

    from ._asgi import build_app, with_errors, with_root_path
    from ._load import find_stub, import_script

    directory = args.dir.resolve()
    os.chdir(directory)
    module = import_script(directory, args.module)
    _, stub = find_stub(module, args.stub)
    fn, spec = stub._functions[args.function]
    app = with_root_path(with_errors(build_app(fn, spec), spec.name))

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(READY_MARKER, flush=True)

    config = uvicorn.Config(
        app,
        uds=args.socket,
        lifespan="off" if spec.web and spec.web.kind == "wsgi" else "auto",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_graceful_shutdown=spec.timeout,
    )
    Server(config).run()


if __name__ == "__main__":
    main()

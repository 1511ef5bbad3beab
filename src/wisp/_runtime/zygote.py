"""A zygote: a process that has imported the container runtime and forks containers on demand.

`python -m wisp._runtime.zygote --socket PATH` runs in an image's environment. It imports what
every container needs (uvicorn, FastAPI, Starlette, pydantic, ...) once, with no threads and no
event loop, then waits for requests on a Unix socket. Each request (a JSON line plus two file
descriptors: the container's output pipe and a status pipe) forks a child that becomes the
container: new session, its own environment and working directory, then the agent's main().
The zygote reaps its children and writes each one's exit code to its status pipe.
The user's code is never imported here, so every container gets fresh module state.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading

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


def preload() -> list[str]:
    """Import what can be imported; the names that could not be (a package the image lacks)."""
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _child(request: dict[str, object], out_fd: int, inherited: list[int]) -> None:
    """In the forked child: become the container. Never returns."""
    code = 1
    try:
        for fd in inherited:  # siblings' status pipes: holding them would hide their exits
            with contextlib.suppress(OSError):
                os.close(fd)
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        sys.stdout.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]
        os.environ.clear()
        os.environ.update(request["env"])  # type: ignore[arg-type]
        os.chdir(str(request["cwd"]))
        from wisp._runtime.__main__ import main

        main(list(request["args"]))  # type: ignore[arg-type]
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


class Zygote:
    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.children: dict[int, int] = {}  # pid -> status pipe fd
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wake select(); reaping happens below
        signal.set_wakeup_fd(wake_w)

    def serve(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.listener, self.wake_r], [], [])
            except InterruptedError:
                continue
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
                self.reap()
            if self.listener in ready:
                conn, _ = self.listener.accept()
                with conn:
                    self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 2)
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            conn.sendall(b'{"error": "expected two file descriptors"}\n')
            return
        out_fd, status_fd = fds
        if threading.active_count() != 1:  # fork with threads could deadlock the child
            os.close(out_fd)
            os.close(status_fd)
            conn.sendall(b'{"error": "the zygote has threads; start containers as fresh processes"}\n')
            return
        request = json.loads(data)
        pid = os.fork()
        if pid == 0:
            conn.close()
            self.listener.close()
            os.close(status_fd)
            _child(request, out_fd, [*self.children.values(), self.wake_r])
        os.close(out_fd)
        self.children[pid] = status_fd
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        self.reap()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.children.pop(pid, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
                os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(prog="wisp-zygote")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()
    os.chdir("/")
    missing = preload()
    zygote = Zygote(args.socket)
    print(json.dumps({"ready": True, "pid": os.getpid(), "missing": missing}), flush=True)
    zygote.serve()


if __name__ == "__main__":
    main()

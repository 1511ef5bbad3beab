"""Container lifecycle (S12): one instance of the user's class per container, its enter hooks
before the container counts as ready, its exit hooks at shutdown.

Sync hooks are called on the main thread with no event loop running (so `asyncio.run` inside
them works, as in a plain script); async hooks run on the loop that then serves the requests, so
the clients and locks they create belong to it.
"""
from __future__ import annotations

import asyncio
import inspect
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType, ModuleType, TracebackType
from typing import Any

from .._app import ENTER, EXIT, Stub, lifecycle_hooks
from ._load import LoadError

Hook = tuple[str, Callable[[], Any]]  # (name for messages, call)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def new_loop() -> asyncio.AbstractEventLoop:
    """The loop for async hooks and uvicorn alike (uvloop when the image has it, as uvicorn's "auto")."""
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What `asyncio.run` does at the end, short of waiting for executor threads."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def find_class(module: ModuleType, stub: Stub, path: str) -> type:
    """An `@stub.cls` class is kept by the stub; a seed-style class is found by its path."""
    found: Any = stub._classes.get(path)
    if found is None:
        found = module
        for part in path.split("."):
            found = getattr(found, part, None)
    if not inspect.isclass(found):
        where = getattr(module, "__file__", module.__name__)
        raise LoadError(f"Class `{path}` was not found in {where}. Define it at the module's top level.")
    return found


def enter_hooks(instance: Any) -> list[Hook]:
    """`__enter__` first (the seed's form), then the `@wisp.enter()` methods in definition order."""
    klass = type(instance)
    hooks: list[Hook] = [("__enter__", instance.__enter__)] if hasattr(klass, "__enter__") else []
    return hooks + [(name, getattr(instance, name)) for name in lifecycle_hooks(klass, ENTER)]


def exit_hooks(instance: Any) -> list[Hook]:
    """The `@wisp.exit()` methods, then `__exit__(None, None, None)`: enter's order, reversed in kind."""
    klass = type(instance)
    hooks: list[Hook] = [(name, getattr(instance, name)) for name in lifecycle_hooks(klass, EXIT)]
    if hasattr(klass, "__exit__"):
        hooks.append(("__exit__", lambda: instance.__exit__(None, None, None)))
    return hooks


def call(loop: asyncio.AbstractEventLoop, hook: Callable[[], Any]) -> None:
    result = hook()
    if inspect.isawaitable(result):
        loop.run_until_complete(result)


def enter(loop: asyncio.AbstractEventLoop, klass: type) -> object:
    """Make the container's instance and run its enter hooks, or exit the process if one raises.

    The traceback's last line is what the pool shows waiting requests (a 503), so it comes last.
    """
    started = time.monotonic()
    step = f"{klass.__name__}()"
    try:
        instance = klass()
        for name, hook in enter_hooks(instance):
            step = f"{klass.__name__}.{name}"
            call(loop, hook)
    except Exception:
        print(f"{step} raised while the container was starting:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        sys.exit(1)
    print(f"{klass.__name__}: enter finished in {time.monotonic() - started:.2f} s", file=sys.stderr, flush=True)
    return instance


def run_exits(loop: asyncio.AbstractEventLoop, instance: object) -> None:
    """Every exit hook runs; one that raises has its traceback logged and does not stop the rest."""
    for name, hook in exit_hooks(instance):
        try:
            call(loop, hook)
        except BaseException:
            print(f"{type(instance).__name__}.{name} raised while the container was stopping:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()


class StopSignals:
    """Hold SIGTERM/SIGINT from the end of enter until the exit hooks have run.

    uvicorn installs its own handlers while it serves and, once drained, re-raises the signal it
    caught so that the process dies of it (`Server.capture_signals`). With these handlers around
    it, that re-raised signal lands here instead, and the exit hooks still run. A signal that
    arrives before serving starts (say, while an ASGI factory runs) skips serving.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def reinstall(self) -> None:
        """Hold the signals again after something else handled them for a while (an event loop's
        own handlers, removed with the default left behind)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)

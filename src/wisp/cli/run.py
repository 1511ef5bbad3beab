"""`wisp run script.py[::name]` and `with stub.run():` an ephemeral app for the length of a block.

The app's functions run in containers as under `serve`; the block (a `@stub.local_entrypoint()`,
or a function called with `.remote()`) runs in this process and calls them. The app is held by
heartbeats like a served one, and stopped when the block ends.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._session import output as _output
from .._session.package import PackageError, Target

if TYPE_CHECKING:
    from .._app import Stub


def _kwargs(fn: Callable[..., Any], argv: list[str]) -> dict[str, Any]:
    """`--name value` options for the function's parameters, typed by their annotations."""
    parser = argparse.ArgumentParser(prog=f"wisp run ...::{fn.__name__}")
    for param in inspect.signature(fn).parameters.values():
        kind = param.annotation if param.annotation in (int, float, str) else None
        if kind is None and isinstance(param.annotation, str) and param.annotation in ("int", "float", "str"):
            kind = {"int": int, "float": float, "str": str}[param.annotation]
        if param.annotation in (bool, "bool"):
            parser.add_argument(f"--{param.name}", action=argparse.BooleanOptionalAction, default=param.default
                                if param.default is not param.empty else False)
            continue
        required = param.default is param.empty
        parser.add_argument(f"--{param.name}", type=kind or str, required=required,
                            default=None if required else param.default)
    return vars(parser.parse_args(argv))


def _choose(stub: Stub, name: str | None, script: str) -> tuple[Callable[..., Any], bool]:
    """The entrypoint to run, and whether it is a function to call remotely."""
    entrypoints = stub.registered_entrypoints
    functions = stub.registered_functions
    if name is None:
        if len(entrypoints) == 1:
            return next(iter(entrypoints.values())), False
        known = ", ".join([*entrypoints, *functions]) or "none"
        raise PackageError(f"Name what to run: `wisp run {script}::NAME`, a @stub.local_entrypoint() or a function "
                           f"(here: {known}).")
    if name in entrypoints:
        return entrypoints[name], False
    if name in functions:
        return functions[name], True
    raise PackageError(f"{script} has no local entrypoint or function named `{name}`; it has: "
                       f"{', '.join([*entrypoints, *functions]) or 'none'}.")


def run(args: argparse.Namespace) -> int:
    from .._runtime._load import LoadError, find_stub, import_script

    path, _, name = args.target.partition("::")
    try:
        target = Target.parse(path)
        module = import_script(target.script.parent, target.script.stem)
        _, stub = find_stub(module)
        fn, remote = _choose(stub, name or None, path)
    except (PackageError, LoadError) as exc:
        _output.fail(exc.args[0])
        return 1
    kwargs = _kwargs(fn, args.args)
    try:
        with stub.run():
            result = fn.remote(**kwargs) if remote else fn(**kwargs)  # type: ignore[attr-defined]  # the call forms @stub.function attached
            if inspect.iscoroutine(result):
                import asyncio

                result = asyncio.run(result)
    except RuntimeError as exc:
        _output.fail(str(exc))
        return 1
    if remote and result is not None:
        print(result)
    sys.stdout.flush()
    return 0

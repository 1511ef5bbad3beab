"""Import a user's script and find its Stub. Used in containers and by the CLI's inspector."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

from .._app import Stub


class LoadError(Exception):
    """The user's script could not be used; the message says what to change."""


MODAL_APP_ENV = "WISP_MODAL_APP"  # set by the server for apps deployed by Modal's own client


def import_script(directory: Path, module: str) -> ModuleType:
    """Import `module` from `directory` the way `python script.py` would see its siblings."""
    if os.environ.get(MODAL_APP_ENV) == "1":
        alias_modal()
    sys.path.insert(0, str(directory))
    return importlib.import_module(module)


def alias_modal() -> None:
    """An app deployed by Modal's client imports `modal`: in its containers that name is wisp,
    whose SDK takes Modal's names and keywords, so the script runs unchanged on wisp's agent. It
    replaces the real client where a zygote imported that for Modal's entrypoint."""
    import wisp
    from wisp import exception, functions

    for name, module in (("modal", wisp), ("modal.exception", exception), ("modal.functions", functions)):
        sys.modules[name] = module


def find_stub(module: ModuleType, attr: str | None = None) -> tuple[str, Stub]:
    if attr:  # "": the one Stub (App) the module defines, as for apps deployed by Modal's client
        stub = getattr(module, attr, None)
        if not isinstance(stub, Stub):
            raise LoadError(f"`{attr}` in {module.__file__} is not a wisp.Stub.")
        return attr, stub
    found = [(name, value) for name, value in vars(module).items() if isinstance(value, Stub)]
    if not found:
        raise LoadError(
            f"No wisp.Stub found in {module.__file__}. Define one at module level: "
            "`stub = wisp.Stub()`, then decorate functions with `@stub.webhook`."
        )
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise LoadError(
            f"{module.__file__} defines several stubs ({names}); name one: "
            f"`wisp serve {Path(str(module.__file__)).name}::{found[0][0]}`."
        )
    return found[0]

"""Runtime backends start, stop and watch containers. Chosen by name (STYLE rule 6)."""
from __future__ import annotations

from .base import ContainerProcess, Runtime
from .local import LocalRuntime

RUNTIMES: dict[str, type[Runtime]] = {"local": LocalRuntime, "auto": LocalRuntime}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]()
    except KeyError:
        raise ValueError(f"Unknown runtime {name!r}. Choose one of: {', '.join(sorted(RUNTIMES))}.") from None


__all__ = ["ContainerProcess", "Runtime", "RUNTIMES", "get_runtime"]

"""Runtime backends start, stop and watch containers. Chosen by name (STYLE rule 6)."""
from __future__ import annotations

import os
import socket

from .base import ContainerProcess, Launcher, Log, NoCapacity, NotReady, Runtime
from .cluster.runtime import ClusterRuntime
from .local import LocalRuntime
from .sandbox import SandboxRuntime
from .zygote import ZygoteRuntime

_CAN_FORK = hasattr(os, "fork") and hasattr(socket, "send_fds")
RUNTIMES: dict[str, type[Runtime]] = {
    "local": LocalRuntime,  # every container a fresh interpreter
    "zygote": ZygoteRuntime,  # containers forked from a per-image zygote (Linux, macOS)
    "sandbox": SandboxRuntime,  # zygote's forks, each in namespaces of its own with seccomp (Linux)
    "auto": ZygoteRuntime if _CAN_FORK else LocalRuntime,
    "ray": ClusterRuntime,  # the nodes of a Ray cluster (WISP_RAY_ADDRESS; `pip install wisp[ray]`)
}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]()
    except KeyError:
        raise ValueError(f"Unknown runtime {name!r}. Choose one of: {', '.join(sorted(RUNTIMES))}.") from None


__all__ = ["RUNTIMES", "ContainerProcess", "Launcher", "Log", "NoCapacity", "NotReady", "Runtime", "get_runtime"]

"""Runtime backends start, stop and watch containers. Chosen by name (STYLE rule 6)."""
from __future__ import annotations

import os
import socket
import sys

from .base import ContainerProcess, Launcher, Log, NoCapacity, NotReady, Runtime
from .cluster.runtime import ClusterRuntime
from .local import LocalRuntime
from .sandbox import SandboxRuntime, auto_choice, probe
from .zygote import ZygoteRuntime

_CAN_FORK = hasattr(os, "fork") and hasattr(socket, "send_fds")
RUNTIMES: dict[str, type[Runtime]] = {
    "local": LocalRuntime,  # every container a fresh interpreter
    "zygote": ZygoteRuntime,  # containers forked from a per-image zygote (Linux, macOS)
    "sandbox": SandboxRuntime,  # zygote's forks, each in namespaces of its own with seccomp (Linux)
    "auto": SandboxRuntime,  # the sandbox where the kernel gives it, else zygote, else local (`auto_runtime`)
    "ray": ClusterRuntime,  # the nodes of a Ray cluster (WISP_RAY_ADDRESS; `pip install wisp[ray]`)
}


def auto_runtime() -> Runtime:
    """`--runtime auto`: the sandbox where the kernel gives its namespaces, else the zygote runtime
    (else fresh interpreters), the server saying at start what is missing (`sandbox.auto_choice`)."""
    missing = probe() if _CAN_FORK else {}
    name, lines = auto_choice(_CAN_FORK, missing)
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    if name == "sandbox":
        return SandboxRuntime(missing=missing)  # it says what it runs without
    return RUNTIMES[name]()


def node_runtime(name: str | None) -> str:
    """A Ray node's runtime (`WISP_NODE_RUNTIME`): `auto` or unset is never the sandbox there, whose
    containers could not answer over TCP (docs/security.md)."""
    if name and name != "auto":
        return name
    return "zygote" if _CAN_FORK else "local"


def get_runtime(name: str) -> Runtime:
    if name == "auto":
        return auto_runtime()
    try:
        return RUNTIMES[name]()
    except KeyError:
        raise ValueError(f"Unknown runtime {name!r}. Choose one of: {', '.join(sorted(RUNTIMES))}.") from None


__all__ = ["RUNTIMES", "ContainerProcess", "Launcher", "Log", "NoCapacity", "NotReady", "Runtime", "auto_runtime", "get_runtime",
           "node_runtime"]

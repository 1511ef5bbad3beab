"""The sandbox runtime (`--runtime sandbox`, issue 15 point 1): the zygote runtime, with every
forked child (function zygotes, containers, Modal's entrypoint) entering a sandbox of its own
before any user code runs (`wisp._runtime.sandbox` says what it is made of).

At start the runtime probes the kernel in a throwaway process and prints one line per missing
mechanism; the children are then told to skip it (`without`), so the server runs with what it
has and never fails silently. No container of this runtime is started as an unsandboxed fresh
interpreter: where the zygote runtime would start one (`fork=False`, a script that leaves
threads behind at import, no function zygote), the image's zygote forks a container that imports
the script itself, sandboxed like the others.

Containers have no network, so they call functions through Unix sockets in their app's own
folder (`call_sockets`), which `AppManager.call_env` names when `isolated_network` is set.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..._protocol import Start
from ..isolation import AppUser
from . import release
from .base import ContainerProcess, Launcher
from .egress import Egress
from .gpus import NO_GPUS, Grant
from .slots import SlotSupply
from .zygote import ZygoteRuntime, _request

PROBE_TIMEOUT = 30.0
WITHOUT_ENV = "WISP_SANDBOX_WITHOUT"  # pieces to run without, whatever the kernel gives (namespaces,overlay,seccomp)
WHAT = {
    "namespaces": "containers share the server's namespaces and see its whole filesystem (user, mount, pid, net, "
                  "ipc and uts namespaces unavailable)",
    "overlay": "a container's version folder is read-only to it (no overlay in a user namespace)",
    "seccomp": "containers run without the seccomp deny-list",
}


def probe(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What the kernel refuses, and what `WISP_SANDBOX_WITHOUT` turns off: mechanism -> why
    (`python -m wisp._runtime.sandbox --probe`)."""
    try:
        done = subprocess.run([sys.executable, "-m", "wisp._runtime.sandbox", "--probe"], capture_output=True,
                              timeout=PROBE_TIMEOUT, check=False)
        found = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        found = {"namespaces": f"the probe failed: {exc}", "seccomp": "the probe failed"}
    return {**{str(k): str(v) for k, v in found.items()}, **turned_off(env.get(WITHOUT_ENV, ""))}


def turned_off(value: str) -> dict[str, str]:
    """The pieces `WISP_SANDBOX_WITHOUT` (comma-separated) names, as the probe reports them;
    a name that is no piece of the sandbox is refused with the ones there are."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in WHAT]
    if unknown:
        raise ValueError(f"{WITHOUT_ENV} names {', '.join(unknown)}, which the sandbox does not have: name some "
                         f"of {', '.join(WHAT)}, comma-separated, or leave it unset.")
    return {name: f"turned off by {WITHOUT_ENV}" for name in names}


def auto_choice(can_fork: bool, missing: Mapping[str, str]) -> tuple[str, list[str]]:
    """What `--runtime auto` runs, and what the server says about it: the sandbox where the
    kernel gives its namespaces (lacking only seccomp or overlay, it says so itself and runs
    without them); else the zygote runtime, a line per missing piece; else fresh interpreters."""
    if not can_fork:
        return "local", ["wisp server: runtime auto: this platform cannot fork with descriptors: containers are "
                         "fresh interpreters, without a sandbox"]
    if "namespaces" not in missing:
        return "sandbox", []
    lines = [f"wisp server: runtime auto: no sandbox: {WHAT.get(piece, piece)} ({why})"
             for piece, why in sorted(missing.items())]
    return "zygote", [*lines, "wisp server: runtime auto: running the zygote runtime without the sandbox "
                              "(forks with the app's uid; docs/security.md says what that leaves open)"]


def missing_lines(missing: Mapping[str, str]) -> list[str]:
    """One line per missing mechanism: what it means for containers, and the kernel's reason."""
    return [f"wisp server: sandbox: {WHAT.get(piece, piece)} ({why})" for piece, why in sorted(missing.items())]


class ImageForkLauncher:
    """A container forked from the image's zygote that imports the script itself: the sandbox's
    stand-in for a fresh interpreter."""

    def __init__(self, runtime: SandboxRuntime, python: str, start: Start, env: Mapping[str, str], cwd: Path,
                 user: AppUser | None, note: str | None, slots: SlotSupply | None = None) -> None:
        self.runtime = runtime
        self.slots = slots  # its containers' limits: the child joins its slot before entering the sandbox
        self.python = python
        self.start_params = start
        self.env = dict(env)
        self.cwd = cwd
        self.user = user
        self.note = note

    def prepare(self) -> None:
        if self.slots is not None:
            self.slots.prepare()

    async def ready(self) -> str | None:
        return None

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> ContainerProcess:
        request = _request(self.start_params.for_container(socket_path, gpus.device_nodes()),
                           {**self.env, **gpus.env()}, self.cwd, self.user, self.runtime.sandbox,
                           tmp_size_mb=self.slots.limits.tmp_size_mb if self.slots is not None else None)
        process = await self.runtime.fork_module(self.python, request,
                                                 self.slots.take() if self.slots is not None else None)
        process.note = self.note
        return process

    async def close(self) -> None:
        if self.slots is not None:
            self.slots.close()


class SandboxRuntime(ZygoteRuntime):
    """Forked containers, each in a sandbox of its own (see the module's docstring)."""

    name = "sandbox"
    isolated_network = True  # containers reach the gateway and control API through Unix sockets

    def __init__(self, missing: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.missing = dict(probe() if missing is None else missing)
        for line in missing_lines(self.missing):
            print(line, file=sys.stderr, flush=True)
        self.sandbox = {"without": sorted(self.missing), "hidden": []}
        self._socket_dir: str | None = None
        self.egress = Egress.probe("namespaces" in self.missing)  # network= (egress.py); one line if missing

    def hide(self, home: str, socket_dir: str) -> None:
        """The server's home and its socket folder: no sandbox shows them, even through a
        read-only folder that holds them, but for what it is given of them."""
        assert self.sandbox is not None
        self.sandbox["hidden"] = [*self.sandbox["hidden"], os.path.realpath(home), os.path.realpath(socket_dir)]
        self._socket_dir = socket_dir

    def zygote_folder(self, user: AppUser | None) -> str | None:
        """The folder of its containers' sockets, which its sandbox shows them (without per-app
        uids, the server's one socket folder)."""
        return user.socket_dir if user else self._socket_dir

    def zygote_pid(self, pid: int) -> int:
        """A sandboxed function zygote is the one child of the process its image zygote forked
        (which waits for it outside its pid namespace): its memory is what the bound counts."""
        return next(iter(release.children(pid)), pid)

    def fresh_launcher(self, python: str, start: Start, env: Mapping[str, str], cwd: Path, user: AppUser | None,
                       note: str | None = None, slots: SlotSupply | None = None) -> Launcher:
        return ImageForkLauncher(self, python, start, env, cwd, user, None if note is None else self.fresh_note(note),
                                 slots)

    def fresh_note(self, note: str) -> str:
        return note.replace("started as a fresh process", "forked from the image's zygote, importing the script itself")

    async def close(self) -> None:
        await super().close()
        await self.egress.close()

    def binds_devices(self) -> bool:
        return "namespaces" not in self.missing  # without them, a container sees the machine's /dev


__all__ = ["WITHOUT_ENV", "ImageForkLauncher", "SandboxRuntime", "auto_choice", "missing_lines", "probe", "turned_off"]

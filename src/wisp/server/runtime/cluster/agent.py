"""The host agent: one per node of a Ray cluster, run there as a Ray actor (`num_cpus=0`, pinned to
its node). It is a small wisp server without a gateway: it builds the node's images with wisp's
builder (cached by image hash), unpacks app versions from their content-addressed bundles (once
per node), and starts containers with wisp's own runtime (forked from zygotes that are ordinary
child processes, never forks of the Ray worker), each serving on `tcp:ADDRESS:PORT`.

Each container holds its own devices of the node's GPUs (discovered on the node, as a one-machine
server does: `capacity.Capacity`), so its CUDA_VISIBLE_DEVICES names only those; the server's
placement has already counted them against the node's GPUs.

Nothing here is Ray's but the actor around it: its methods are plain async methods, called by
`runtime.ClusterRuntime` on the server. Requests never pass through it; the server's gateway
connects to the containers directly.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...._gpu import parse as parse_gpu
from ...._image_steps import ImageSpec
from ...._protocol import Start, tcp
from ...._runtime._parent import die_with_parent
from ... import build_sandbox
from ...bundles import extract_bundle
from ...images import LocalImageBuilder
from ...isolation import AppUser, app_user, base_env, own_tree
from .. import get_runtime, groups, node_runtime
from ..base import ContainerProcess, Launcher, NotReady, Runtime
from ..capacity import Capacity, CappedLauncher
from ..gpu_discovery import discover
from ..placement import container_settings
from .placement import NOTHING

OUTPUT_BATCH = 256  # lines handed to the server per call, at most
BEAT = 0.2  # seconds between two bytes on the server's lifeline


def node_home(name: str) -> Path:
    """Where a node keeps its images, app versions and run record: `$WISP_NODE_HOME/<name>`
    (default ~/.wisp-node/<name>: several nodes may share a machine)."""
    base = os.environ.get("WISP_NODE_HOME") or os.path.join(os.path.expanduser("~"), ".wisp-node")
    return Path(base) / name


def free_port(host: str) -> int:
    """A port on `host` nobody listens on now (the container binds it next)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def unpack(data: bytes, digest: str, folder: Path) -> Path:
    """A version's bundle unpacked under `folder/<digest>` (once: the digest names its content)."""
    target = folder / digest
    if target.is_dir():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=folder))
    try:  # the server checked its size when it was deployed; every member is checked again here
        extract_bundle(data, partial, None)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        partial.rename(target)
    except OSError:  # another call unpacked it first
        shutil.rmtree(partial, ignore_errors=True)
    return target


@dataclass
class _Output:
    """A container's output as the server has not read it yet."""

    lines: list[bytes] = field(default_factory=list)
    code: int | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class _Lines:
    """What a launcher writes to the app's log, kept until the server asks (with its next call)."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, str | None]] = []

    def write(self, line: str, *, source: str | None = None) -> None:
        self.kept.append((line, source))

    def take(self) -> list[tuple[str, str | None]]:
        kept, self.kept = self.kept, []
        return kept


class HostAgent:
    """The node's agent. `name` is the node's name in wisp (`wisp node list`), `address` the host
    its containers listen on (the node's configured address, not Ray's NodeManagerAddress)."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = os.environ.get("WISP_NODE_ADDRESS") or address
        self.home = node_home(name)
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o711)  # app uids pass through to their code and images, never list it
        self.epoch = 0
        self._runtime: Runtime | None = None
        self._builder: LocalImageBuilder | None = None
        self._launchers: dict[str, tuple[Launcher, _Lines]] = {}
        self._containers: dict[str, tuple[ContainerProcess, _Output]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lifeline: asyncio.Server | None = None
        self._gpus: Capacity | None = None  # the node's GPUs and which containers hold them

    async def hello(self) -> dict[str, Any]:
        """Start the node's runtime (ending what an earlier agent of this node left running) and
        its lifeline, and say who this agent is: its epoch counts the agents this node has had."""
        if self._runtime is None:
            # The agent dies with its raylet (its parent), at once rather than when it next looks,
            # and its containers with it: the server's lifeline to it breaks in the same instant.
            die_with_parent(signal.SIGKILL, os.getppid())
            groups.current = groups.begin(self.home, [])
            self.epoch = groups.current.epoch
            self._runtime = get_runtime(node_runtime(os.environ.get("WISP_NODE_RUNTIME")))
            # Only devices are reserved here (the server counts cores and memory per node).
            self._gpus = Capacity(float(os.cpu_count() or 1), 0, gpus=discover())
            self._builder = LocalImageBuilder(self.home)
            self._builder.sandbox, notes = build_sandbox.configure(self.home, os.environ)
            for note in notes:  # the node's Ray log: once per agent, as a server says it at start
                print(f"wisp node agent: {note}", file=sys.stderr, flush=True)
            self._builder.readable_by_others = os.geteuid() == 0
            self._lifeline = await asyncio.start_server(self._beat, self.address, 0)
        assert self._lifeline is not None
        port = self._lifeline.sockets[0].getsockname()[1]
        return {"name": self.name, "epoch": self.epoch, "address": self.address, "pid": os.getpid(), "lifeline": port}

    async def _beat(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The server's lifeline: a byte every BEAT seconds for as long as this agent lives."""
        try:
            while True:
                writer.write(b".")
                await writer.drain()
                await asyncio.sleep(BEAT)
        except (ConnectionError, OSError):
            writer.close()

    async def watch(self) -> None:
        """Never returns: the server holds this call open too, and its failure says the node is gone."""
        await asyncio.Event().wait()

    async def prepare(self, key: str, image: dict[str, Any], bundle: bytes, digest: str, start: dict[str, Any],
                      app_env: dict[str, str], fork: bool, startup_timeout: float, uid: int | None,
                      gpu: str | list[str] | None = None) -> dict[str, Any]:
        """Get a function version ready on this node: its image built, its code unpacked, its
        zygote importing. Returns why only a container can prove it (an import that failed), or
        raises NotReady with the reason. `gpu`: the function's gpu=, which its containers' devices meet."""
        assert self._runtime is not None and self._builder is not None and self._gpus is not None, "hello() first"
        if key in self._launchers:
            launcher, log = self._launchers[key]
        else:
            spec = ImageSpec.from_data(image)
            python = await self._builder.ensure(spec)
            app_id = app_env.get("WISP_APP", "app")
            user = self._user(uid)
            code = unpack(bundle, digest, self.home / "apps" / app_id)
            if user is not None:
                own_tree(code, user)
            image_env, cwd = container_settings(spec, python, code)
            env = {**base_env(code, os.environ.get("LANG")), **image_env, **app_env, "WISP_NODE": self.name}
            log = _Lines()
            launcher = CappedLauncher(
                self._runtime.launcher(str(python), Start(directory=str(code), **start), env=env, cwd=cwd,
                                       fork=fork, log=log, startup_timeout=startup_timeout, user=user),
                self._gpus, NOTHING, parse_gpu(gpu))
            launcher.prepare()
            self._launchers[key] = (launcher, log)
        try:
            why = await launcher.ready()
        except NotReady as exc:
            return {"not_ready": str(exc), "log": log.take()}
        return {"import_error": why, "log": log.take()}

    def _user(self, uid: int | None) -> AppUser | None:
        if uid is None or os.geteuid() != 0:
            return None
        sockets = self.home / "s"
        sockets.mkdir(mode=0o711, exist_ok=True)
        return app_user(uid, str(sockets))

    async def start(self, key: str, cid: str) -> dict[str, Any]:
        """Start a container of a prepared function version; where it will listen."""
        launcher, log = self._launchers[key]
        address = tcp(self.address, free_port(self.address))
        process = await launcher.start(address)
        output = _Output()
        self._containers[cid] = (process, output)
        task = asyncio.ensure_future(self._pump(process, output))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"pid": process.pid, "address": address, "note": process.note, "log": log.take()}

    async def _pump(self, process: ContainerProcess, output: _Output) -> None:
        async for line in process.lines():
            output.lines.append(line)
            output.changed.set()
        output.code = await process.wait()
        output.changed.set()

    async def output(self, cid: str) -> tuple[list[bytes], int | None]:
        """The container's next lines (waiting for some), and its exit code once it has exited
        and everything it wrote was handed over."""
        entry = self._containers.get(cid)
        if entry is None:
            return [], -1
        _, out = entry
        while not out.lines and out.code is None:
            out.changed.clear()
            await out.changed.wait()
        lines, out.lines = out.lines[:OUTPUT_BATCH], out.lines[OUTPUT_BATCH:]
        code = out.code if not out.lines else None
        if code is not None:
            del self._containers[cid]
        return lines, code

    async def stop(self, cid: str, grace: float) -> None:
        entry = self._containers.get(cid)
        if entry is not None:
            await entry[0].stop(grace)

    async def close(self, key: str) -> None:
        """The function version is gone on the server: what was kept for it goes too."""
        entry = self._launchers.pop(key, None)
        if entry is not None:
            await entry[0].close()

    async def shutdown(self) -> None:
        for process, _ in list(self._containers.values()):
            with contextlib.suppress(Exception):
                await process.stop(0)
        for launcher, _ in list(self._launchers.values()):
            with contextlib.suppress(Exception):
                await launcher.close()
        if self._runtime is not None:
            await self._runtime.close()


__all__ = ["HostAgent", "free_port", "node_home", "unpack"]

"""The Ray runtime: containers on the nodes of a Ray cluster (`--runtime ray --ray-address ADDR`).

Ray places and watches; wisp keeps its data path. The server starts one `agent.HostAgent` per
node (a Ray actor with num_cpus=0, pinned to the node with a hard NodeAffinitySchedulingStrategy),
chooses the node of each container itself (`placement.place`, wisp's own accounting of `cpu=`,
`memory=` and `gpu=` against the node's totals as Ray reports them) and asks that node's agent to
start it. The container listens on `tcp:NODE_ADDRESS:PORT`, and the gateway connects to it
directly: no request travels through Ray.

A node is lost when the server's TCP lifeline to its agent closes (the agent died: it dies with
its raylet) or falls silent for LOST_AFTER, or when the call held open on it (`watch`, Ray's own
view) fails: its containers count as exited (their requests in flight got
502 from the broken connections; the pools start replacements on the other nodes), and it takes
no container again. An agent started again on the node has a new epoch, and only the current
epoch's containers are ever routed to.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import tarfile
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...._gpu import GpuOption
from ...._gpu import parse as parse_gpu
from ...._protocol import Start
from ...._spec import FunctionSpec
from ...isolation import AppUser
from ..base import Log, NoCapacity, NotReady
from ..gpus import NO_GPUS, Grant
from .placement import NOTHING, Need, NodeView, Placement, need_of, place

logger = logging.getLogger("wisp.cluster")

REFRESH_EVERY = 2.0  # seconds between looks at Ray's node list (new nodes get an agent)
AGENT_START_TIMEOUT = 60.0  # seconds an agent may take to come up on its node
LOST_AFTER = 1.0  # seconds of silence on an agent's lifeline (it beats 5 times a second) that lose its node


class NoRoom(Exception):
    """No node could take the container even empty: its start fails, and so do the requests
    waiting for it (the message says why and what to do)."""


@dataclass(eq=False)
class Node:
    name: str
    node_id: str
    agent: Any  # the actor handle
    epoch: int
    address: str
    total: Need
    draining: bool = False
    lost: bool = False
    reserved: Need = NOTHING
    replicas: Counter[str] = field(default_factory=Counter)  # launcher key -> its containers here
    containers: int = 0

    gpu_model: str = ""  # Ray's accelerator type of its GPUs

    def view(self, key: str) -> NodeView:
        return NodeView(self.name, self.total, self.reserved, self.replicas[key], self.draining, self.lost,
                        self.gpu_model)

    def state(self) -> str:
        return "lost" if self.lost else "draining" if self.draining else "up"


def node_name(node_id: str) -> str:
    """A node's name in wisp: short, stable for the node's life (Ray's node id)."""
    return f"node-{node_id[:8]}"


def totals(resources: Mapping[str, float]) -> Need:
    return Need(float(resources.get("CPU", 0.0)), int(resources.get("memory", 0.0) // (1 << 20)),
                int(resources.get("GPU", 0.0)))


def gpu_model(resources: Mapping[str, float]) -> str:
    """The model of a node's GPUs as Ray reports it (an `accelerator_type:T4` resource); "" if none."""
    return next((key.partition(":")[2] for key in resources if key.startswith("accelerator_type:")), "")


def pack(folder: Path) -> tuple[bytes, str]:
    """An app version's folder as a tarball, and its sha256 (the bundle's name on every node)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


class ClusterRuntime:
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address or os.environ.get("WISP_RAY_ADDRESS") or ""
        self.nodes: dict[str, Node] = {}  # by name
        self._starting: set[str] = set()  # node ids whose agent is coming up
        self._watchers: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._bundles: dict[Path, tuple[Any, str]] = {}  # version folder -> (object ref, digest)
        self._bundle_users: dict[Path, set[str]] = {}  # version folder -> the launchers using its bundle
        self.launchers: weakref.WeakSet[ClusterLauncher] = weakref.WeakSet()  # of the versions running now

    async def start(self) -> None:
        """Join the cluster (as a driver) and start an agent on every node."""
        try:
            import ray
        except ImportError:
            raise RuntimeError("The ray runtime needs Ray: `pip install 'wisp[ray]'` on the server and on every "
                               "node.") from None

        if not self.address:
            raise RuntimeError("The ray runtime needs the cluster's address: --ray-address HOST:PORT "
                               "(or WISP_RAY_ADDRESS), as `ray start --head` printed it.")
        try:
            # On the loop's thread (Ray installs its signal handling there), before anything is served.
            ray.init(address=self.address, namespace="wisp", log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        except Exception as exc:
            raise RuntimeError(f"Cannot join the Ray cluster at {self.address}: {exc}. Is `ray start --head` "
                               "running there, and is its port reachable from here?") from exc
        await self.refresh()
        if not self.nodes:
            raise RuntimeError(f"The Ray cluster at {self.address} has no node wisp could start its agent on; "
                               "see the server's log.")
        self._refresher = asyncio.ensure_future(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            try:
                await self.refresh()
            except Exception:
                logger.exception("cannot list the cluster's nodes")

    async def refresh(self) -> None:
        """Ray's node list: an agent for each live node that has none."""
        import ray

        infos = await asyncio.to_thread(ray.nodes)
        known = {node.node_id for node in self.nodes.values() if not node.lost}
        fresh = [info for info in infos if info.get("Alive") and info["NodeID"] not in known
                 and info["NodeID"] not in self._starting]
        await asyncio.gather(*(self._start_agent(info) for info in fresh))

    async def _start_agent(self, info: dict[str, Any]) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .agent import HostAgent

        node_id = info["NodeID"]
        name = node_name(node_id)
        self._starting.add(node_id)
        try:
            actor: Any = ray.remote(HostAgent).options(
                num_cpus=0, max_restarts=0, max_concurrency=1000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(name, info.get("NodeManagerAddress") or "127.0.0.1")
            hello = await asyncio.wait_for(_ref(actor.hello.remote()), AGENT_START_TIMEOUT)
        except Exception as exc:
            logger.warning("no wisp agent on node %s: %s", name, exc)
            return
        finally:
            self._starting.discard(node_id)
        resources = info.get("Resources", {})
        node = Node(name, node_id, actor, int(hello["epoch"]), str(hello["address"]), totals(resources),
                    gpu_model=gpu_model(resources))
        self.nodes[name] = node
        print(f"wisp server: node {name} joined (agent epoch {node.epoch}, containers on {node.address}, "
              f"{node.total.cpu:g} CPU)", flush=True)
        task = asyncio.ensure_future(self._watch(node, int(hello["lifeline"])))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        for launcher in list(self.launchers):  # the new node gets ready for what runs now, before it is needed
            launcher.prepare()

    async def _watch(self, node: Node, lifeline: int) -> None:
        """The node is lost when its agent's lifeline breaks or falls silent for LOST_AFTER
        seconds (a dead process closes it at once; a machine gone quiet says nothing), or when
        the call held open on it fails (Ray's own view)."""
        held = asyncio.ensure_future(_ref(node.agent.watch.remote()))
        try:
            reader, writer = await asyncio.open_connection(node.address, lifeline)
        except OSError as exc:
            held.cancel()
            self.lose(node, f"its lifeline cannot be reached at {node.address}:{lifeline}: {exc}")
            return
        try:
            while not held.done():
                read = asyncio.ensure_future(reader.read(64))
                await asyncio.wait((read, held), timeout=LOST_AFTER, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    if not held.done():
                        self.lose(node, f"its agent said nothing for {LOST_AFTER:g} s")
                        return
                elif not read.result():
                    self.lose(node, "its agent's lifeline closed")
                    return
            self.lose(node, f"Ray: {type(held.exception()).__name__}")
        except (ConnectionError, OSError) as exc:
            self.lose(node, f"its agent's lifeline broke: {exc}")
        finally:
            held.cancel()
            writer.close()

    def lose(self, node: Node, why: str) -> None:
        if node.lost:
            return
        node.lost = True
        print(f"wisp server: node {node.name} lost ({why}); its containers are gone, new ones start elsewhere",
              flush=True)

    # -- placement and the accounting -----------------------------------------------------------
    def place(self, key: str, need: Need, gpu: tuple[GpuOption, ...] = ()) -> tuple[Node, Placement]:
        decision = place([n.view(key) for n in self.nodes.values()], need, gpu)
        if decision.node is None:
            raise NoRoom(decision.reason) if decision.never else NoCapacity(decision.reason)
        node = self.nodes[decision.node]
        node.reserved += need
        node.replicas[key] += 1
        node.containers += 1
        return node, decision

    def unreserve(self, node: Node, key: str, need: Need) -> None:
        node.reserved = Need(node.reserved.cpu - need.cpu, node.reserved.memory_mb - need.memory_mb,
                             node.reserved.gpu - need.gpu)
        node.replicas[key] -= 1
        node.containers -= 1

    def drain(self, name: str) -> Node:
        node = self.nodes.get(name)
        if node is None:
            raise KeyError(name)
        node.draining = True
        return node

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": n.name, "state": n.state(), "address": n.address, "epoch": n.epoch,
                 "cpu": n.total.cpu, "memory_mb": n.total.memory_mb, "gpu": n.total.gpu, "gpus": n.gpu_model,
                 "reserved_cpu": round(n.reserved.cpu, 3), "reserved_memory_mb": n.reserved.memory_mb,
                 "reserved_gpu": n.reserved.gpu, "containers": n.containers}
                for n in sorted(self.nodes.values(), key=lambda n: n.name)]

    async def bundle(self, folder: Path, key: str) -> tuple[Any, str]:
        """The version folder's bundle in Ray's object store: packed once, fetched once per node,
        kept while a launcher (`key`) of the version uses it."""
        import ray

        if folder not in self._bundles:
            data, digest = await asyncio.to_thread(pack, folder)
            if folder not in self._bundles:
                self._bundles[folder] = (ray.put(data), digest)
        self._bundle_users.setdefault(folder, set()).add(key)
        return self._bundles[folder]

    def release_bundle(self, folder: Path, key: str) -> None:
        users = self._bundle_users.get(folder, set())
        users.discard(key)
        if not users:
            self._bundle_users.pop(folder, None)
            self._bundles.pop(folder, None)

    # -- the Runtime interface -------------------------------------------------------------------
    def launcher(self, python: str, start: Start, *, env: Mapping[str, str], cwd: Path, fork: bool, log: Log,
                 startup_timeout: float = 300.0, user: AppUser | None = None,
                 slots: object = None) -> ClusterLauncher:
        raise TypeError("the ray runtime starts containers through function_launcher(), which knows the "
                        "function's image and reservation")

    def function_launcher(self, fn: FunctionSpec, start: Start, app_env: Mapping[str, str], log: Log,
                          user: AppUser | None) -> ClusterLauncher:
        launcher = ClusterLauncher(self, fn, start, dict(app_env), log, user)
        self.launchers.add(launcher)
        return launcher

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*(_quietly(_ref(n.agent.shutdown.remote()), 10.0)
                               for n in self.nodes.values() if not n.lost))
        import ray

        with contextlib.suppress(Exception):
            await asyncio.to_thread(ray.shutdown)


class ClusterLauncher:
    """The containers of one function version, on whichever nodes placement picks."""

    def __init__(self, runtime: ClusterRuntime, fn: FunctionSpec, start: Start, app_env: dict[str, str], log: Log,
                 user: AppUser | None) -> None:
        self.runtime = runtime
        self.fn = fn
        self.start_params = start
        self.app_env = app_env
        self.log = log
        self.uid = user.uid if user is not None else None
        self.key = uuid.uuid4().hex[:12]
        self.need = need_of(fn.cpu, fn.memory, fn.gpu)
        try:
            self.gpu = parse_gpu(fn.gpu)
        except ValueError:  # stored before the SDK checked gpu=: placed by its count only
            self.gpu = ()
        self._prepared: dict[str, asyncio.Future[str | None]] = {}  # node name -> its prepare
        self._first: asyncio.Future[str | None] | None = None

    def prepare(self) -> None:
        """Every node that could take a container prepares (builds, unpacks, imports) now."""
        for node in self.runtime.nodes.values():
            if not node.lost and not node.draining:
                self._on(node)

    def _on(self, node: Node) -> asyncio.Future[str | None]:
        future = self._prepared.get(node.name)
        if future is None:
            future = self._prepared[node.name] = asyncio.ensure_future(self._prepare(node))
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, if nobody waits on it
        return future

    async def _prepare(self, node: Node) -> str | None:
        ref, digest = await self.runtime.bundle(Path(self.start_params.directory), self.key)
        start = {"module": self.start_params.module, "stub": self.start_params.stub,
                 "function": self.start_params.function}
        answer: dict[str, Any] = await _ref(node.agent.prepare.remote(
            self.key, self.fn.image.to_data(), ref, digest, start, self.app_env, self.fn.fork,
            self.fn.startup_timeout, self.uid, gpu=[str(o) for o in self.gpu] or None))
        self._write(answer.get("log", []))
        if "not_ready" in answer:
            raise NotReady(f"on node {node.name}: {answer['not_ready']}")
        why: str | None = answer.get("import_error")
        return why

    def _write(self, lines: list[tuple[str, str | None]]) -> None:
        for line, source in lines:
            self.log.write(line, source=source)

    async def ready(self) -> str | None:
        """The first node that prepares the function proves it can start; if none can, why."""
        self.prepare()
        if not self._prepared:
            raise NotReady("no node of the cluster can take containers now (`wisp node list`)")
        pending: set[asyncio.Future[str | None]] = set(self._prepared.values())
        failure: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    why: str | None = task.result()
                    return why
                failure = task.exception()
        if isinstance(failure, NotReady):
            raise failure
        raise NotReady(f"no node could prepare `{self.fn.name}`: {failure}")

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> ClusterProcess:
        # `gpus` is this machine's assignment, never made for a cluster: placement counts a node's
        # GPUs (Need.gpu), and the node's agent gives the container its devices.
        node, _ = self.runtime.place(self.key, self.need, self.gpu)
        try:
            await self._on(node)
            cid = f"{self.key}-{Path(socket_path).stem}"
            info = await _ref(node.agent.start.remote(self.key, cid))
        except BaseException:
            self.runtime.unreserve(node, self.key, self.need)
            raise
        self._write(info.get("log", []))
        return ClusterProcess(self, node, cid, int(info["pid"]), str(info["address"]), info.get("note"))

    async def close(self) -> None:
        self.runtime.launchers.discard(self)
        self.runtime.release_bundle(Path(self.start_params.directory), self.key)
        for name in self._prepared:
            node = self.runtime.nodes.get(name)
            if node is not None and not node.lost:
                await _quietly(_ref(node.agent.close.remote(self.key)), 10.0)


class ClusterProcess:
    """A container on a node, as the pool sees any container: its lines, its exit, its stop."""

    def __init__(self, launcher: ClusterLauncher, node: Node, cid: str, pid: int, address: str,
                 note: str | None) -> None:
        self._launcher = launcher
        self.node = node
        self.cid = cid
        self.pid = pid
        self.address = address  # where the gateway connects: tcp:HOST:PORT on the node
        self.note: str | None = f"on node {node.name}" + (f"; {note}" if note else "")
        self._code: int | None = None
        self._done = asyncio.Event()

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    lines, code = await _ref(self.node.agent.output.remote(self.cid))
                except Exception as exc:
                    self._code = -9
                    if not self.node.lost:
                        self._launcher.runtime.lose(self.node, type(exc).__name__)
                    yield f"[wisp] the node {self.node.name} was lost, and this container with it".encode()
                    return
                for line in lines:
                    yield line
                if code is not None:
                    self._code = code
                    return
        finally:
            if not self._done.is_set():
                self._done.set()
                self._launcher.runtime.unreserve(self.node, self._launcher.key, self._launcher.need)

    async def wait(self) -> int:
        await self._done.wait()
        return -9 if self._code is None else self._code

    def out_of_memory(self) -> str | None:
        return None  # limits on a node are its own runtime's (not enforced through Ray yet)

    async def stop(self, grace: float) -> None:
        if self.node.lost:
            return
        await _quietly(_ref(self.node.agent.stop.remote(self.cid, grace)), grace + 30.0)


async def _ref(ref: Any) -> Any:
    """A Ray object ref awaited on the server's loop (uvloop or not)."""
    return await asyncio.wrap_future(ref.future())


async def _quietly(awaitable: Any, timeout: float) -> None:
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(awaitable, timeout)


__all__ = ["ClusterLauncher", "ClusterProcess", "ClusterRuntime", "NoRoom", "Node", "node_name", "pack", "totals"]

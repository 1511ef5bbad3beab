"""Pure placement on a cluster: which node takes a function's next container, or why none can.

wisp keeps its own accounting per node (Ray only reports each node's totals): a container
reserves its function's `cpu=`, `memory=` and `gpu=` (Modal's defaults when unset) for its life.
Replicas of one function spread over the nodes; among equals, the least reserved node wins. A
function with `gpu=` goes only to nodes whose GPU model (Ray's `accelerator_type:`) one of its
options names, or whose model Ray did not report; its count is its first option's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ...._gpu import GpuOption, GpuValue
from ...._gpu import parse as parse_gpu
from ..gpus import Gpu, rank

DEFAULT_CPU = 0.125  # cores a function reserves when it sets no cpu= (Modal's default)
DEFAULT_MEMORY_MB = 128  # MiB, likewise


@dataclass(frozen=True)
class Need:
    """What one container reserves."""

    cpu: float = DEFAULT_CPU
    memory_mb: int = DEFAULT_MEMORY_MB
    gpu: int = 0

    def __add__(self, other: Need) -> Need:
        return Need(self.cpu + other.cpu, self.memory_mb + other.memory_mb, self.gpu + other.gpu)


NOTHING = Need(0.0, 0, 0)


def need_of(cpu: float | None, memory: int | None, gpu: GpuValue) -> Need:
    """A function's reservation from its decorator's `cpu=`, `memory=` (MiB) and `gpu=`
    ("A10G", "any", "H100:2": the count after a colon, else one; of fallbacks, the first's)."""
    try:
        options = parse_gpu(gpu)
        count = options[0].count if options else 0
    except ValueError:  # stored before the SDK checked gpu=: one GPU (its function cannot be placed anyway)
        count = 1
    return Need(DEFAULT_CPU if cpu is None else cpu, DEFAULT_MEMORY_MB if memory is None else memory, count)


@dataclass(frozen=True)
class NodeView:
    """One node as placement sees it: its totals, what its containers reserve, and how many of
    them run the function being placed."""

    name: str
    total: Need
    reserved: Need = NOTHING
    replicas: int = 0
    draining: bool = False
    lost: bool = False
    gpu_model: str = ""  # Ray's accelerator type ("T4", "A100-80G"); "": none reported

    def has_model(self, options: tuple[GpuOption, ...]) -> bool:
        """Whether its GPUs are one of `options`' models (True when it asks for none; by count
        only when Ray did not say which model the node's GPUs are)."""
        if not options:
            return True
        if not self.total.gpu:
            return False
        if not self.gpu_model:
            return True
        device = Gpu(0, re.sub(r"(\d+)G$", r"\1GB", self.gpu_model))  # Ray's "A100-80G": wisp's "A100-80GB"
        return any(rank(o, device) is not None for o in options)

    def room_for(self, need: Need) -> bool:
        after = self.reserved + need
        return (after.cpu <= self.total.cpu + 1e-9 and after.memory_mb <= self.total.memory_mb
                and after.gpu <= self.total.gpu)

    def could_ever_fit(self, need: Need) -> bool:
        return need.cpu <= self.total.cpu + 1e-9 and need.memory_mb <= self.total.memory_mb and need.gpu <= self.total.gpu


@dataclass(frozen=True)
class Placement:
    node: str | None  # where the container goes; None: nowhere now
    reason: str = ""  # why nowhere
    never: bool = False  # no node could take it even empty: waiting will not help


def place(nodes: list[NodeView], need: Need, gpu: tuple[GpuOption, ...] = ()) -> Placement:
    """The node for the next container: the fewest replicas of this function first (spread), then
    the smallest share of CPU reserved, then the name (stable). `gpu`: the function's options,
    whose models a node's GPUs must be."""
    usable = [n for n in nodes if not n.lost and not n.draining]
    if gpu and usable and not any(n.has_model(gpu) for n in usable):
        models = ", ".join(sorted({n.gpu_model or "unreported" for n in usable if n.total.gpu})) or "none"
        return Placement(None, f"it asks for {', '.join(map(str, gpu))}, and the nodes' GPUs are {models}; add a node "
                               "with that GPU, or change the function's gpu=", never=True)
    usable = [n for n in usable if n.has_model(gpu)]
    fits = [n for n in usable if n.room_for(need)]
    if fits:
        best = min(fits, key=lambda n: (n.replicas, n.reserved.cpu / n.total.cpu if n.total.cpu else 1.0, n.name))
        return Placement(best.name)
    if not usable:
        why = "no node is up" if not nodes or all(n.lost for n in nodes) else "every node is draining"
        return Placement(None, f"{why}; start a node (`ray start --address ...`) or undrain one")
    wanted = _describe(need)
    if not any(n.could_ever_fit(need) for n in usable):
        biggest = max(usable, key=lambda n: (n.total.cpu, n.total.memory_mb, n.total.gpu))
        return Placement(None, f"it reserves {wanted}, more than any node has (the largest, {biggest.name}, has "
                               f"{_describe(biggest.total)}); lower the function's cpu=/memory=/gpu= or add a "
                               "larger node", never=True)
    return Placement(None, f"every node that could take {wanted} is full; requests wait for a free container "
                           "(add nodes, or lower the function's cpu=/memory=)")


def _describe(need: Need) -> str:
    gpu = f", {need.gpu} GPU" if need.gpu else ""
    return f"{need.cpu:g} CPU, {need.memory_mb} MiB{gpu}"


__all__ = ["DEFAULT_CPU", "DEFAULT_MEMORY_MB", "NOTHING", "Need", "NodeView", "Placement", "need_of", "place"]

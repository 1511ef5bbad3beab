"""Pure placement on a cluster: which node takes a function's next container, or why none can.

wisp keeps its own accounting per node (Ray only reports each node's totals): a container
reserves its function's `cpu=`, `memory=` and `gpu=` (Modal's defaults when unset) for its life.
Replicas of one function spread over the nodes; among equals, the least reserved node wins.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...._gpu import GpuValue
from ...._gpu import parse as parse_gpu

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


def place(nodes: list[NodeView], need: Need) -> Placement:
    """The node for the next container: the fewest replicas of this function first (spread), then
    the smallest share of CPU reserved, then the name (stable)."""
    usable = [n for n in nodes if not n.lost and not n.draining]
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

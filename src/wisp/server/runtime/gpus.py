"""Which of this machine's GPUs a container gets (issue 15, point 4): pure, no I/O.

A function's `gpu=` (`wisp._gpu`: options in order of preference, each a model and a count) is
matched against the machine's inventory (`gpu_discovery` reads it at start). `choose` takes the
first option that some free devices satisfy now, all of one model (the same device name), the
lowest indices first; when none does, it says whether waiting helps (the matching devices exist
but containers hold them) or never will (the machine has no such GPU, or too few). A container
holds its devices for its life (`capacity.Capacity`); `Grant` is what it is started with: the
`CUDA_VISIBLE_DEVICES` of its environment and the `/dev/nvidia*` nodes a sandbox lets it open.

How a model name matches a device's name (case-insensitive, in words split at spaces and dashes):
- "ANY": every GPU;
- the request's words appear in a row in the device's name ("T4" ~ "Tesla T4", "RTX-PRO-6000" ~
  "NVIDIA RTX PRO 6000 Blackwell Server Edition"), and a word like "80GB" is the device's memory
  instead, within 15% ("A100-80GB" ~ "NVIDIA A100-SXM4-80GB", and ~ "NVIDIA A100 80GB PCIe");
- "A10" and "A10G" are one part (Modal sells the A10G as "A10");
- Modal's stand-ins, taken only when the named model is not free: "H100" may run on an H200
  (unless "H100!"), "B200+" on a B300. "A100" is any A100 (40 or 80 GB), as on Modal.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..._gpu import GpuOption, GpuValue, describe
from ..._gpu import parse as parse_gpu

_MEMORY = re.compile(r"(\d+)GB")
MEMORY_SLACK = 0.15  # a device of "80GB" reports 79.6 GiB (81559 MiB), of "40GB" 40 GiB
ALIASES = {"A10": ("A10G",), "A10G": ("A10",)}  # one part under two names
STAND_INS = {"H100": ("H200",)}  # Modal may run these on a newer part unless the name ends in "!"
NEWER = {"B200": ("B300",)}  # what "B200+" also takes


@dataclass(frozen=True)
class Gpu:
    """One device of the inventory."""

    index: int  # nvidia-smi's / NVML's index (PCI bus order)
    name: str  # "Tesla T4", "NVIDIA A100-SXM4-80GB"
    uuid: str = ""  # "GPU-8f6c...": what CUDA_VISIBLE_DEVICES names it by when known
    memory_mb: int = 0  # MiB
    minor: int | None = None  # N of its /dev/nvidiaN; None: unknown, taken to be the index

    @property
    def device_node(self) -> str:
        return f"/dev/nvidia{self.index if self.minor is None else self.minor}"


@dataclass(frozen=True)
class Inventory:
    """The machine's GPUs and where that was learned (for messages)."""

    devices: tuple[Gpu, ...] = ()
    source: str = "no NVIDIA driver found (neither pynvml nor nvidia-smi)"

    def describe(self) -> str:
        if not self.devices:
            return f"no GPU ({self.source})"
        counts: dict[str, list[int]] = {}
        for gpu in self.devices:
            counts.setdefault(gpu.name, []).append(gpu.index)
        return ", ".join(f"{len(ix)} x {name} (index {', '.join(map(str, ix))})" for name, ix in counts.items())


@dataclass(frozen=True)
class Grant:
    """The devices one container holds; empty for a function without `gpu=`."""

    devices: tuple[Gpu, ...] = ()

    def env(self) -> dict[str, str]:
        """Its environment's share: only its devices visible to CUDA, in nvidia-smi's order (by
        uuid when known, so the order does not matter); none at all without `gpu=`."""
        ids = [gpu.uuid or str(gpu.index) for gpu in self.devices]
        return {"CUDA_VISIBLE_DEVICES": ",".join(ids), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    def device_nodes(self) -> tuple[str, ...]:
        """The `/dev/nvidiaN` nodes of its devices (Start.gpu_devices): what a sandbox binds,
        besides the shared /dev/nvidiactl, /dev/nvidia-uvm* and /dev/nvidia-modeset."""
        return tuple(gpu.device_node for gpu in self.devices)


NO_GPUS = Grant()


@dataclass(frozen=True)
class Choice:
    """`choose`'s answer: devices to hold now, or why not (and whether waiting helps)."""

    devices: tuple[Gpu, ...] = ()
    reason: str = ""  # when no devices: why
    never: bool = False  # no option could ever be met on this machine


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s\-_]+", text.upper()) if w]


def _memory_fits(size_gb: int, memory_mb: int) -> bool:
    return abs(memory_mb / 1024 - size_gb) <= MEMORY_SLACK * size_gb


def _named(model: str, gpu: Gpu) -> bool:
    """Whether the device's name (and memory) is `model`'s: its words in a row, sizes as memory."""
    wanted = _words(model)
    sizes = [int(m.group(1)) for w in wanted if (m := _MEMORY.fullmatch(w))]
    words = [w for w in wanted if not _MEMORY.fullmatch(w)]
    have = _words(gpu.name)
    in_a_row = any(have[i:i + len(words)] == words for i in range(len(have) - len(words) + 1))
    by_size = all(_memory_fits(size, gpu.memory_mb) or f"{size}GB" in have for size in sizes)
    return in_a_row and by_size


def rank(option: GpuOption, gpu: Gpu) -> int | None:
    """0 if the device is the option's model, 1 if it is a stand-in for it, None if neither."""
    if option.model == "ANY":
        return 0
    if any(_named(name, gpu) for name in (option.model, *ALIASES.get(option.model, ()))):
        return 0
    stand_ins = () if option.exact else STAND_INS.get(option.model, ())
    if option.newer:
        stand_ins = (*stand_ins, *NEWER.get(option.model, ()))
    return 1 if any(_named(name, gpu) for name in stand_ins) else None


def choose(options: Sequence[GpuOption], inventory: Iterable[Gpu], held: Iterable[int] = ()) -> Choice:
    """The devices a new container gets: the first option (in order) that free devices of one
    model meet now, the model's own devices before stand-ins, the lowest indices first."""
    devices = list(inventory)
    busy = set(held)
    could_wait: list[GpuOption] = []
    for option in options:
        groups: dict[str, list[tuple[int, Gpu]]] = {}
        for gpu in devices:
            r = rank(option, gpu)
            if r is not None:
                groups.setdefault(gpu.name, []).append((r, gpu))
        possible = [g for g in groups.values() if len(g) >= option.count]
        if possible:
            could_wait.append(option)
        free = [sorted((gpu for _, gpu in g if gpu.index not in busy), key=lambda gpu: gpu.index) for g in possible]
        ready = [(min(r for r, _ in g), f) for g, f in zip(possible, free) if len(f) >= option.count]
        if ready:
            _, best = min(ready, key=lambda pair: (pair[0], pair[1][0].index))
            return Choice(tuple(best[:option.count]))
    if could_wait:
        asked = ", ".join(str(o) for o in could_wait)
        return Choice(reason=f"every GPU that fits {asked} is held by another container; requests wait for one "
                             "to be given back")
    return Choice(never=True)


def unplaceable(value: GpuValue, inventory: Inventory) -> str | None:
    """Why no container of a function asking for `value` can ever start on this machine (its
    requests get 503 with this), or None when one can (now or once devices are free)."""
    try:
        options = parse_gpu(value)
    except ValueError as exc:
        return f"its {describe(value)} cannot be read ({exc}); fix it in the script and deploy again"
    if not options or not choose(options, inventory.devices).never:
        return None
    return (f"it asks for {describe(value)}, and this machine has {inventory.describe()}: no container of it can "
            "start here. Deploy it to a server on a machine with that GPU, or change gpu= to a GPU this machine "
            "has (gpu='any' takes whichever there is)")


__all__ = ["ALIASES", "NEWER", "NO_GPUS", "STAND_INS", "Choice", "Gpu", "Grant", "Inventory", "choose", "rank",
           "unplaceable"]

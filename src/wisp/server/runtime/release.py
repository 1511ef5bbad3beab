"""Which idle zygotes to stop so that what they hold stays under a memory bound (issue 16).

Pure: the runtime gathers each zygote's size, last use and whether anything runs from it, and
stops what `to_release` names. A zygote is idle when no container forked from it runs, no start
is under way and it is not importing; only idle ones count toward the bound and only they are
stopped, least recently used first, until the idle ones left fit. Stopping one costs its next
cold start a fork of its parent (a function zygote is re-created from its image's in tens of
ms; an image zygote, the parent of every function zygote, goes only once it has none left).
"""
from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from ..._protocol import STANDBY_NAME

MB = 1 << 20
DEFAULT_BOUND_MB = 128
BOUND_VARIABLE = "WISP_ZYGOTE_MEMORY_MB"


@dataclass(frozen=True)
class Held:
    """One zygote as the policy sees it."""

    key: Hashable
    size: int  # bytes (its PSS)
    last_used: float  # when it last forked or a container of it ended, on any one clock
    busy: bool  # containers forked from it run, a start is under way, or it is still importing


def to_release(held: Sequence[Held], bound: int) -> list[Hashable]:
    """The idle zygotes to stop, least recently used first, so that the idle ones left hold at most
    `bound` bytes. Busy zygotes are never named and do not count toward the bound."""
    idle = sorted((h for h in held if not h.busy), key=lambda h: h.last_used)
    total = sum(h.size for h in idle)
    released = []
    for zygote in idle:
        if total <= bound:
            break
        released.append(zygote.key)
        total -= zygote.size
    return released


def bound_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """Bytes idle zygotes may hold: WISP_ZYGOTE_MEMORY_MB (default 128; 0 releases every idle one)."""
    raw = environ.get(BOUND_VARIABLE) or str(DEFAULT_BOUND_MB)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError(f"{BOUND_VARIABLE}={raw!r} must be a number of megabytes, 0 or more "
                         f"(default {DEFAULT_BOUND_MB}); set it so or unset it.")
    return int(value * MB)


def pss(pid: int) -> int | None:
    """A process's proportional set size in bytes (/proc/PID/smaps_rollup), else its resident set
    size (/proc/PID/statm); None once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def held_pss(pid: int) -> int | None:
    """What a zygote holds: its PSS and that of the container it forked ahead, if any (a child
    named `STANDBY_NAME`). That one shares its pages and so halves the zygote's PSS; counted apart
    from it, the bound would see half of what keeping the zygote costs. Containers it forked and
    that run are not counted: they are the app's, and while they run the zygote is busy anyway."""
    own = pss(pid)
    if own is None:
        return None
    return own + sum(pss(child) or 0 for child in parked(pid))


def parked(pid: int) -> list[int]:
    """A zygote's children that are containers forked ahead, waiting for a request (named
    `STANDBY_NAME`)."""
    found = []
    for child in children(pid):
        try:
            with open(f"/proc/{child}/comm") as comm:
                if comm.read().strip() == STANDBY_NAME:
                    found.append(child)
        except OSError:
            continue
    return found


def children(pid: int) -> list[int]:
    """A process's children (/proc/PID/task/PID/children); none once it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listed:
            return [int(child) for child in listed.read().split()]
    except (OSError, ValueError):
        return []


__all__ = ["BOUND_VARIABLE", "DEFAULT_BOUND_MB", "MB", "Held", "bound_from_env", "children", "held_pss", "parked", "pss",
           "to_release"]

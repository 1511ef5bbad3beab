"""How many containers a function should have: a pure decision, fed by the pools.

`decide()` has no clock and no I/O (STYLE rule 1). Scaling up is immediate: the containers
that demand needs right now. Scaling down is delayed: the decision is the highest need seen
during the last `scaledown_window` seconds, so a container is removed only after a whole
window in which it was not needed, and a steady load never flaps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    min_containers: int = 0  # keep_warm: a floor that never expires
    max_containers: int = 64  # concurrency_limit: a hard cap
    target_per_container: int = 1  # in-flight requests one container should carry
    buffer_containers: int = 0  # extra idle containers while the function is busy
    scaledown_window: float = 60.0


@dataclass(frozen=True)
class Observed:
    in_flight: int  # requests being served
    queued: int  # requests waiting for a slot


@dataclass(frozen=True)
class ScaleState:
    # Sliding-window maximum: (time, need) pairs with strictly decreasing need, oldest first.
    # The first pair is the window's peak; later, smaller needs wait their turn.
    peaks: tuple[tuple[float, int], ...] = ()


def need(settings: Settings, observed: Observed) -> int:
    """Containers the current demand calls for, before floors and caps."""
    demand = observed.in_flight + observed.queued
    if demand == 0:
        return 0
    return math.ceil(demand / settings.target_per_container) + settings.buffer_containers


def decide(settings: Settings, observed: Observed, now: float, state: ScaleState) -> tuple[int, ScaleState]:
    """Desired containers for `observed` at `now`, and the state for the next call."""
    current = need(settings, observed)
    peaks = [p for p in state.peaks if now - p[0] < settings.scaledown_window]
    while peaks and peaks[-1][1] <= current:
        peaks.pop()
    peaks.append((now, current))
    desired = max(peaks[0][1], settings.min_containers)
    return min(desired, settings.max_containers), ScaleState(tuple(peaks))

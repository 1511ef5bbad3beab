"""How many containers a function should have: a pure decision, fed by the pools.

`decide()` has no clock and no I/O (STYLE rule 1). Scaling up is immediate: the containers
that demand needs right now. Scaling down is delayed: the decision is the highest need seen
during the last `scaledown_window` seconds, so a container is removed only after a whole
window in which it was not needed, and a steady load never flaps.
"""
from __future__ import annotations

import dataclasses
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


# Requests a busy container may be handed beyond its inputs, to wait on its agent's gate, while
# its function cannot start more containers (`standby_slots`): so it goes from one input to the
# next with no turn through the gateway between them. A request waiting in one container cannot
# go to another that frees up first, so what waits there is bounded by its expected work.
STANDBY_BUDGET = 0.05  # seconds of expected work queued in one container, at most
STANDBY_MAX = 3  # requests beyond the inputs, at most

FAILURE_BACKOFF = (0.5, 1, 2, 4, 8, 16, 30)  # seconds before the next start after 1, 2, ... failures
FAILED_AFTER = 3  # consecutive failed starts before the function shows as failed


@dataclass(frozen=True)
class ScaleState:
    # Sliding-window maximum: (time, need) pairs with strictly decreasing need, oldest first.
    # The first pair is the window's peak; later, smaller needs wait their turn.
    peaks: tuple[tuple[float, int], ...] = ()
    failures: int = 0  # container starts that failed in a row (a ready container resets it)
    retry_at: float = 0.0  # no container starts before this (backing off after failures)


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
    if state.failures:  # after failed starts, retry for real demand only, not a past peak
        desired = min(desired, max(current, settings.min_containers))
    return min(desired, settings.max_containers), dataclasses.replace(state, peaks=tuple(peaks))


def standby_slots(mean_duration: float) -> int:
    """Requests beyond its inputs a busy container may hold when its function's requests take
    `mean_duration` seconds on average: as many as fit in STANDBY_BUDGET, up to STANDBY_MAX; none
    for requests that long (they would only trade a small gap for waiting behind a slow one)."""
    if mean_duration >= STANDBY_BUDGET:
        return 0
    if mean_duration <= 0:
        return STANDBY_MAX
    return min(STANDBY_MAX, int(STANDBY_BUDGET / mean_duration))


def prestarted(count: int, now: float, state: ScaleState) -> ScaleState:
    """Containers started ahead of requests (a new version replacing a warm one) count as a
    demand peak now, so the first decision after the swap keeps them for a window."""
    return dataclasses.replace(state, peaks=((now, count),)) if count > 0 else state


def backoff(failures: int) -> float:
    """Seconds to wait before the next start after `failures` failed starts in a row."""
    return FAILURE_BACKOFF[min(max(failures, 1), len(FAILURE_BACKOFF)) - 1]


def start_failed(now: float, state: ScaleState) -> ScaleState:
    """A container failed while starting: one failure more, and no start before the backoff."""
    failures = state.failures + 1
    return dataclasses.replace(state, failures=failures, retry_at=now + backoff(failures))


def start_succeeded(state: ScaleState) -> ScaleState:
    """A container became ready: the function works again."""
    return dataclasses.replace(state, failures=0, retry_at=0.0)


def may_start(now: float, state: ScaleState) -> bool:
    return now >= state.retry_at


def is_failed(state: ScaleState) -> bool:
    """What `wisp app list` shows as a failed function."""
    return state.failures >= FAILED_AFTER

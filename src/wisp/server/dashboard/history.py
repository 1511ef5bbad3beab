"""What the dashboard's charts show: a second-by-second summary of each function, kept for the
last 15 minutes in fixed-size rings. Pure: the pools hand over what happened since the last
sample (`Window`), `summarize` makes one `Point` of it, `History` keeps the points."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

KEEP_SECONDS = 15 * 60  # the charts' span; one point a second per function, so 900 points at most


@dataclass
class Window:
    """What one function did since its last sample; the pool fills it on its hot path with one
    append per request (no clock read beyond the ones it makes anyway)."""

    # Seconds from lease to release, and answers by status: floats and a counter, not a tuple per
    # request, so the hot path allocates nothing the garbage collector tracks.
    durations: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)  # seconds a request waited for a container
    cold_starts: list[float] = field(default_factory=list)  # seconds from start to ready


@dataclass(frozen=True)
class Point:
    at: float  # wall-clock seconds
    by_status: dict[str, int]  # "2xx", "4xx", "5xx", "other": requests answered in this second
    p50_ms: float | None
    p99_ms: float | None
    wait_ms: float | None  # mean queue wait of the requests that waited
    cold_starts: int
    cold_start_ms: float | None  # mean
    containers: dict[str, int]


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 200 <= status < 600 else "other"


def summarize(window: Window, containers: dict[str, int], at: float) -> Point:
    by_status: dict[str, int] = {}
    for status, count in window.statuses.items():
        key = status_class(status)
        by_status[key] = by_status.get(key, 0) + count
    times = sorted(window.durations)
    return Point(
        at=at,
        by_status=by_status,
        p50_ms=_quantile(times, 0.5) * 1000 if times else None,
        p99_ms=_quantile(times, 0.99) * 1000 if times else None,
        wait_ms=sum(window.waits) / len(window.waits) * 1000 if window.waits else None,
        cold_starts=len(window.cold_starts),
        cold_start_ms=sum(window.cold_starts) / len(window.cold_starts) * 1000 if window.cold_starts else None,
        containers=dict(containers),
    )


def is_empty(window: Window) -> bool:
    """Nothing happened in the window: no request answered or waiting, no cold start."""
    return not (window.durations or window.statuses or window.waits or window.cold_starts)


def quiet_point(at: float) -> Point:
    """The point of a second in which nothing happened and no container ran."""
    return Point(at=at, by_status={}, p50_ms=None, p99_ms=None, wait_ms=None, cold_starts=0, cold_start_ms=None,
                 containers={})


class _Ring:
    """One function's points: those of its seconds with something in them, by tick number."""

    def __init__(self, since: int) -> None:
        self.since = since  # the first tick it was there for
        self.points: deque[tuple[int, Point]] = deque()


class History:
    """One point a second per (app id, function), for the last `keep` ticks (KEEP_SECONDS).

    Only seconds in which something happened are stored as points: a second of a function with no
    request, no cold start and no container reads back as `quiet_point`. Most of 2,000 deployed
    functions are scaled to zero with no traffic; they cost the tick and memory nothing beyond
    their ring's entry (`tick` is once per second, `add` once per function with something to say).
    """

    def __init__(self, keep: int = KEEP_SECONDS) -> None:
        self.keep = keep
        self._ticks: deque[float] = deque(maxlen=keep)  # the times of the last `keep` ticks
        self._count = 0  # ticks so far; the current one is number _count - 1
        self._rings: dict[tuple[str, str], _Ring] = {}

    def tick(self, at: float) -> None:
        """A new second begins: every function known has a point for it, quiet unless `add`ed."""
        self._ticks.append(at)
        self._count += 1

    def add(self, app_id: str, function: str, point: Point) -> None:
        """The current second's point of a function in which something happened."""
        ring = self.known(app_id, function)
        ring.points.append((self._count - 1, point))
        while ring.points[0][0] < self._count - self.keep:
            ring.points.popleft()

    def known(self, app_id: str, function: str) -> _Ring:
        """Its ring, made at the current tick if it had none (its seconds read back quiet)."""
        ring = self._rings.get((app_id, function))
        if ring is None:
            ring = self._rings[(app_id, function)] = _Ring(max(self._count - 1, 0))
        return ring

    def of(self, app_id: str) -> dict[str, list[Point]]:
        return {fn: self._points(ring) for (app, fn), ring in self._rings.items() if app == app_id}

    def _points(self, ring: _Ring) -> list[Point]:
        first = self._count - len(self._ticks)  # the tick number of self._ticks[0]
        recorded = dict(ring.points)
        return [recorded.get(n) or quiet_point(self._ticks[n - first]) for n in range(max(ring.since, first), self._count)]

    def forget(self, keep_apps: set[str]) -> None:
        """Drop the rings of apps no longer known, so a server's memory stays bounded."""
        for key in [k for k in self._rings if k[0] not in keep_apps]:
            del self._rings[key]


@dataclass(frozen=True)
class Node:
    """One machine of the cluster view: what it has, what running containers reserve."""

    name: str
    cpus: float
    memory_mb: int
    reserved_cpus: float
    reserved_memory_mb: int
    containers: int


def node_of(name: str, cpus: float, memory_mb: int, pools: list[tuple[float | None, int | None, int]]) -> Node:
    """`pools`: (cpu, memory MB per container as the function asks, live containers) of each pool."""
    return Node(name, cpus, memory_mb,
                reserved_cpus=sum((cpu or 0.0) * n for cpu, _, n in pools),
                reserved_memory_mb=sum((memory or 0) * n for _, memory, n in pools),
                containers=sum(n for _, _, n in pools))

"""Prometheus text-format metrics, kept in memory: counters and histograms with labels.

Small on purpose: the gateway's hot path only increments a counter or observes a number.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _fmt_labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.values: dict[Labels, float] = {}
        self._extended: dict[tuple[Labels, str, object], Labels] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def inc_with(self, labels: Labels, name: str, value: object) -> None:
        """inc(labels + (name, str(value))), for the hot path: each distinct label set is
        built once and then only looked up."""
        key = (labels, name, value)
        full = self._extended.get(key)
        if full is None:
            full = self._extended[key] = (*labels, (name, str(value)))
        self.values[full] = self.values.get(full, 0.0) + 1.0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_fmt_labels(k)} {v:g}" for k, v in sorted(self.values.items())]
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.buckets = buckets
        self.series: dict[Labels, list[float]] = {}  # per-bucket counts, then +Inf count, then sum

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        series[bisect.bisect_left(self.buckets, value)] += 1
        series[-1] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, series in sorted(self.series.items()):
            running = 0.0
            for bound, count in zip((*self.buckets, float("inf")), series[:-1]):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                bucket_labels = _fmt_labels(labels, 'le="' + le + '"')
                lines.append(f"{self.name}_bucket{bucket_labels} {running:g}")
            lines.append(f"{self.name}_count{_fmt_labels(labels)} {running:g}")
            lines.append(f"{self.name}_sum{_fmt_labels(labels)} {series[-1]:g}")
        return lines


class Gauge:
    """Computed when scraped, from the live state."""

    def __init__(self, name: str, help_text: str, collect: Callable[[], Iterable[tuple[Labels, float]]]) -> None:
        self.name = name
        self.help = help_text
        self.collect = collect

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        lines += [f"{self.name}{_fmt_labels(k)} {v:g}" for k, v in sorted(self.collect())]
        return lines


class Metrics:
    def __init__(self) -> None:
        self.requests = Counter("wisp_requests_total", "Requests answered, by app, function and HTTP status.")
        self.queue_wait = Histogram("wisp_queue_wait_seconds", "Time requests waited for a container slot.")
        self.cold_start = Histogram("wisp_cold_start_seconds", "Container start to ready, enter hooks included.")
        self.enter = Histogram("wisp_enter_seconds", "Time spent in a container's enter hooks.")
        self.gauges: list[Gauge] = []

    def render(self) -> str:
        lines: list[str] = []
        metrics: list[Counter | Histogram | Gauge] = [self.requests, self.queue_wait, self.cold_start, self.enter]
        for metric in metrics + self.gauges:
            lines += metric.render()
        return "\n".join(lines) + "\n"

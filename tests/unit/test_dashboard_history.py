"""The dashboard's chart history (pure): a second summarized, and rings that stay bounded."""
from __future__ import annotations

import pytest

from wisp.server.dashboard.history import History, Point, Window, is_empty, quiet_point, status_class, summarize


@pytest.mark.parametrize(("status", "cls"), [(200, "2xx"), (204, "2xx"), (303, "3xx"), (404, "4xx"),
                                             (503, "5xx"), (101, "other"), (0, "other")])
def test_status_class(status: int, cls: str) -> None:
    assert status_class(status) == cls


def test_a_second_is_summarized() -> None:
    window = Window(durations=[0.010, 0.020, 0.030, 0.001] + [0.002] * 96, statuses={200: 98, 500: 1, 404: 1},
                    waits=[0.1, 0.3], cold_starts=[0.012, 0.014])
    point = summarize(window, {"ready": 2, "busy": 1}, 1000.0)
    assert point.by_status == {"2xx": 98, "5xx": 1, "4xx": 1}
    assert point.p50_ms == pytest.approx(2.0) and point.p99_ms == pytest.approx(20.0)
    assert point.wait_ms == pytest.approx(200.0)
    assert (point.cold_starts, point.cold_start_ms) == (2, pytest.approx(13.0))
    assert point.containers == {"ready": 2, "busy": 1} and point.at == 1000.0


def test_a_quiet_second_has_no_latencies() -> None:
    point = summarize(Window(), {}, 5.0)
    assert (point.by_status, point.p50_ms, point.p99_ms, point.wait_ms, point.cold_starts) == ({}, None, None, None, 0)


def test_rings_are_bounded_and_forgotten_with_their_apps() -> None:
    history = History(keep=3)
    for t in range(10):
        history.tick(float(t))
        history.add("a", "f", summarize(Window(), {}, float(t)))
        history.add("b", "g", summarize(Window(), {}, float(t)))
    assert [p.at for p in history.of("a")["f"]] == [7.0, 8.0, 9.0]
    history.forget({"a"})
    assert history.of("b") == {} and len(history.of("a")["f"]) == 3
    assert isinstance(history.of("a")["f"][0], Point)


def test_a_quiet_second_is_the_summary_of_an_empty_window() -> None:
    assert quiet_point(5.0) == summarize(Window(), {}, 5.0)
    assert is_empty(Window()) and not is_empty(Window(statuses={200: 1})) and not is_empty(Window(waits=[0.1]))


# Each step: "q" a second in which the function had nothing to say (the tick only knows it), "p"
# one with requests. The ring reads back the last `keep` seconds since it was first known, in
# order, quiet seconds as quiet points.
@pytest.mark.parametrize(("steps", "keep"), [
    ("qqqqq", 3), ("ppppp", 3), ("qqpqq", 3), ("pqqqp", 2), ("qpqpq", 4), ("qqqqqqqqqp", 1), ("pq", 5), ("q", 2),
    ("-qqp", 5), ("--p-q", 5),
])
def test_quiet_seconds_read_back_as_quiet_points_within_the_bound(steps: str, keep: int) -> None:
    history, expected = History(keep=keep), []
    for t, step in enumerate(steps):  # "-": a second before the function existed
        history.tick(float(t))
        if step == "q":
            history.known("a", "f")
            expected.append(quiet_point(float(t)))
        elif step == "p":
            point = summarize(Window(statuses={200: t}), {"ready": 1}, float(t))
            history.add("a", "f", point)
            expected.append(point)
        elif expected:
            history.known("a", "f")  # a function once known stays known: its seconds are quiet
            expected.append(quiet_point(float(t)))
    assert history.of("a")["f"] == expected[-keep:]


def test_a_node_adds_up_what_its_containers_reserve() -> None:
    from wisp.server.dashboard.history import node_of

    node = node_of("m1", 2.0, 24000, [(0.5, 512, 2), (None, None, 3), (1.0, None, 1)])
    assert (node.reserved_cpus, node.reserved_memory_mb, node.containers) == (2.0, 1024, 6)
    assert (node.name, node.cpus, node.memory_mb) == ("m1", 2.0, 24000)

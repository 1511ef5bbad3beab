"""benchmarks/_table.py: samples -> median/p99 -> rows -> met/gap, with tables; no benchmark runs here."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def load_table() -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load the module from its file
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "_table.py"
    spec = importlib.util.spec_from_file_location("bench_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


t = load_table()
INF = math.inf


def run(series: dict[str, list[float | None]], figures: dict[str, Any] | None = None,
        notes: list[str] | None = None) -> dict[str, Any]:
    """One results document as a script writes it (units do not matter to the table)."""
    return {"series": {k: t.series("ms", v) for k, v in series.items()}, "figures": figures or {}, "notes": notes or []}


@pytest.mark.parametrize(
    ("values", "median", "p99"),
    [
        ([5.0], 5.0, 5.0),
        ([3.0, 1.0, 2.0], 2.0, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 2.5, 4.0),  # median interpolates; p99 below 100 samples is the maximum
        ([float(i) for i in range(1, 101)], 50.5, 100.0),
        ([float(i) for i in range(1, 201)], 100.5, 199.0),  # nearest rank: sorted[int(0.99 * 200)]
        ([1.0, None, 2.0], 2.0, INF),  # None: never happened, worse than any number
        ([None], INF, INF),
    ],
)
def test_median_and_p99(values: list[float | None], median: float, p99: float) -> None:
    assert t.median(values) == median
    assert t.p99(values) == p99


@pytest.mark.parametrize(
    ("values", "summary"),
    [
        ([], {"unit": "ms", "n": 0, "values": [], "median": None, "p99": None}),
        ([2.0, 4.0], {"unit": "ms", "n": 2, "values": [2.0, 4.0], "median": 3.0, "p99": 4.0}),
        ([None], {"unit": "ms", "n": 1, "values": [None], "median": None, "p99": None}),  # JSON has no infinity
    ],
)
def test_series_shape(values: list[float | None], summary: dict[str, Any]) -> None:
    assert t.series("ms", values) == summary


@pytest.mark.parametrize(
    ("op", "value", "limit", "gap", "met"),
    [
        ("<=", 42.0, 50.0, -8.0, True),
        ("<=", 50.0, 50.0, 0.0, True),  # on the line counts as met
        ("<=", 62.5, 50.0, 12.5, False),
        (">=", 90.0, 85.0, -5.0, True),
        (">=", 80.0, 85.0, 5.0, False),
        ("abs<=", -1.5, 2.0, -0.5, True),
        ("abs<=", -2.5, 2.0, 0.5, False),
        ("<=", INF, 1.0, INF, False),  # never reached
    ],
)
def test_judge(op: str, value: float, limit: float, gap: float, met: bool) -> None:
    judged = t.judge(t.Check("x", t.Stat("s"), op, limit), value, "ms")
    assert (judged.gap, judged.met) == (gap, met)


def test_judge_without_a_value_is_not_met() -> None:
    judged = t.judge(t.Check("p50", t.Stat("s"), "<=", 50), None, "ms")
    assert (judged.value, judged.met) == (None, False)


def test_unknown_op_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown op '<'.*<=, >=, abs<="):
        t.Check("p50", t.Stat("s"), "<", 50)


@pytest.mark.parametrize(
    ("checks", "values", "expected"),
    [
        ((), (), "n/a (no target)"),
        ((t.Check("p50", t.Stat("s"), "<=", 50),), (42.1,), "yes: p50 42.1 ms"),
        ((t.Check("p50", t.Stat("s"), "<=", 50), t.Check("p99", t.Stat("s", "p99"), "<=", 150)), (42.1, 320.0),
         "no: p50 42.1 ms, p99 320 ms (170 ms over)"),
        ((t.Check("wisp/direct", t.Stat("r"), ">=", 85, "%"),), (80.0,), "no: wisp/direct 80 % (5 % short)"),
        ((t.Check("added p50", t.Diff("a", "b"), "<=", 0.15),), (0.052,), "yes: added p50 +0.052 ms"),
        ((t.Check("worst", t.Stat("o", "absmax"), "abs<=", 2, "s"),), (2.5,), "no: worst +2.50 s (0.500 s outside)"),
        ((t.Check("p50", t.Stat("s"), "<=", 1, "s"),), (INF,), "no: p50 never"),
        ((t.Check("p50", t.Stat("s"), "<=", 50),), (None,), "not measured"),
    ],
)
def test_verdict(checks: tuple[Any, ...], values: tuple[float | None, ...], expected: str) -> None:
    assert t.verdict([t.judge(c, v, "ms") for c, v in zip(checks, values)]) == expected


@pytest.mark.parametrize(
    ("check", "text"),
    [
        (t.Check("p50", t.Stat("s"), "<=", 50), "p50 ≤ 50 ms"),
        (t.Check("added p50", t.Diff("a", "b"), "<=", 0.15), "added p50 ≤ 0.15 ms"),
        (t.Check("wisp/direct", t.Stat("r"), ">=", 85, "%"), "wisp/direct ≥ 85 %"),
        (t.Check("worst", t.Stat("o", "absmax"), "abs<=", 2), "worst within ±2 ms"),
    ],
)
def test_target_text(check: Any, text: str) -> None:
    assert check.text("ms") == text


@pytest.mark.parametrize(
    ("x", "signed", "text"),
    [(823.4, False, "823"), (42.46, False, "42.5"), (1.234, False, "1.23"), (0.0523, False, "0.052"),
     (0.0523, True, "+0.052"), (-0.4, True, "-0.400"), (0.0, False, "0"), (32.0, True, "+32"), (INF, False, "never"),
     (None, False, "—")],
)
def test_fmt(x: float | None, signed: bool, text: str) -> None:
    assert t.fmt(x, signed) == text


COLD = t.RowSpec("cold start", "cold_warm", "ms", "cold.wisp", (t.Baseline("uvicorn", "cold.direct"),),
                 (t.Check("p50", t.Stat("cold.wisp"), "<=", 50), t.Check("p99", t.Stat("cold.wisp", "p99"), "<=", 150)))
ADDED = t.RowSpec("warm", "cold_warm", "ms", "warm.wisp", (t.Baseline("uvicorn", "warm.direct"),),
                  (t.Check("added p50", t.Diff("warm.wisp", "warm.direct"), "<=", 0.15),))
BURST = t.RowSpec("burst of {burst_n}", "autoscale", "s", "full_s", (), (t.Check("p50", t.Stat("full_s"), "<=", 1),))
RATIO = t.RowSpec("throughput", "throughput", "req/s", "rps", (), (t.Check("wisp/direct", t.Stat("pct"), ">=", 85, "%"),))


@pytest.mark.parametrize(
    ("spec", "results", "wisp", "baselines", "met", "ok"),
    [
        (COLD, {"cold_warm": [run({"cold.wisp": [40.0, 45.0, 300.0], "cold.direct": [800.0, 900.0]})]},
         t.Cell(45.0, 300.0, 3), (("uvicorn", t.Cell(850.0, 900.0, 2)),), "no: p50 45 ms, p99 300 ms (150 ms over)",
         False),
        (ADDED, {"cold_warm": [run({"warm.wisp": [0.5, 0.6, 0.7], "warm.direct": [0.45, 0.5, 0.55]})]},
         t.Cell(0.6, 0.7, 3), (("uvicorn", t.Cell(0.5, 0.55, 3)),), "yes: added p50 +0.100 ms", True),
        # a series recorded once per run is pooled over the runs: median and p99 over runs
        (RATIO, {"throughput": [run({"rps": [r], "pct": [p]}) for r, p in ((100.0, 90.0), (120.0, 80.0), (110.0, 88.0))]},
         t.Cell(110.0, 120.0, 3), (), "yes: wisp/direct 88 %", True),
        (BURST, {"autoscale": [run({"full_s": [None]}, {"burst_n": 32})]}, t.Cell(INF, INF, 1), (),
         "no: p50 never", False),
        (COLD, {}, None, (("uvicorn", None),), "not measured", False),  # the benchmark did not run
    ],
)
def test_build_row(spec: Any, results: dict[str, Any], wisp: Any, baselines: tuple[Any, ...], met: str, ok: bool) -> None:
    row = t.build(spec, results)
    assert (row.wisp, row.baselines, row.met, row.ok) == (wisp, baselines, met, ok)


@pytest.mark.parametrize(
    ("figures", "measure"),
    [({"burst_n": 32}, "burst of 32"), ({}, "burst of ?")],
)
def test_measure_names_figures(figures: dict[str, Any], measure: str) -> None:
    assert t.build(BURST, {"autoscale": [run({"full_s": [0.6]}, figures)]}).measure == measure


def test_row_without_checks_shows_its_anchor() -> None:
    spec = t.RowSpec("x", "b", "ms", "s", anchor="Knative 1 s")
    row = t.build(spec, {"b": [run({"s": [1.0]})]})
    assert (row.target, row.met, row.ok) == ("Knative 1 s", "n/a (no target)", None)


def test_every_design_measure_has_a_row() -> None:
    benchmarks = {spec.benchmark for spec in t.SPECS}
    assert benchmarks == {"cold_warm", "autoscale", "memory", "idle_cost", "throughput", "redeploy", "reload", "images",
                          "http_gateway", "many_apps", "heavy_imports", "gateway_workers", "sandbox"}
    measures = " | ".join(spec.measure for spec in t.SPECS)
    for words in ("cold start", "warm request", "burst", "idle scale-down", "PSS", "private", "throughput",
                  "1 connection", "CPU per request", "redeploy", "idle cost", "image zygote released", "live reload",
                  "cold build", "cached resolve", "streaming",
                  "WebSocket", "routes", "functions, warm image", "app list", "numpy + pandas", "gateway workers", "in the sandbox"):
        assert words in measures
    for spec in t.SPECS:  # every row has a target to judge
        assert spec.checks, f"{spec.measure}: no target"


def test_markdown_table() -> None:
    row = t.build(ADDED, {"cold_warm": [run({"warm.wisp": [0.5, 0.6, 0.7], "warm.direct": [0.45, 0.5, 0.55]})]})
    missing = t.build(COLD, {})
    lines = t.markdown([row, missing]).splitlines()
    assert lines[0] == "| measure | unit | wisp median | wisp p99 | n | baselines: median / p99 | target | met? |"
    assert lines[2] == ("| warm | ms | 0.600 | 0.700 | 3 | uvicorn 0.500 / 0.550 | added p50 ≤ 0.15 ms | "
                        "yes: added p50 +0.100 ms |")
    assert lines[3] == "| cold start | ms | — | — | 0 | uvicorn — | p50 ≤ 50 ms, p99 ≤ 150 ms | not measured |"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"# B\n\n{t.BEGIN}\nold\nlines\n{t.END}\n\n## history\n", f"# B\n\n{t.BEGIN}\nNEW\n{t.END}\n\n## history\n"),
        (f"{t.BEGIN}{t.END}", f"{t.BEGIN}\nNEW\n{t.END}"),
    ],
)
def test_replace_section(text: str, expected: str) -> None:
    once = t.replace_section(text, "\nNEW\n\n")
    assert once == expected
    assert t.replace_section(once, "NEW") == once  # writing the same table again changes nothing


@pytest.mark.parametrize("text", ["# B\n", f"{t.END}\n{t.BEGIN}\n", f"{t.BEGIN}\nno end\n"])
def test_replace_section_needs_both_markers_in_order(text: str) -> None:
    with pytest.raises(ValueError, match="add the two markers"):
        t.replace_section(text, "NEW")


@pytest.mark.parametrize(
    ("cpu", "wall", "threads", "start"),
    [
        (0.4, 10.0, 2, "wrk used 0.04 cores over its 2 threads (2 % of a core each): not saturated"),
        (19.0, 10.0, 2, "wrk used 1.90 cores over its 2 threads (95 % of a core each): saturated"),
        (9.5, 10.0, 1, "wrk used 0.95 cores over its 1 threads (95 % of a core each): saturated"),
    ],
)
def test_wrk_note(cpu: float, wall: float, threads: int, start: str) -> None:
    assert t.wrk_note(cpu, wall, threads).startswith(start)


def test_notes_say_whether_wrk_was_the_limit_and_list_errors_and_script_notes() -> None:
    def tput(wrk_cpu: float, errors: int) -> dict[str, Any]:
        doc = run({"wrk.wisp.cpu_s": [wrk_cpu], "wrk.wisp.wall_s": [10.0], "machine_busy.wisp": [0.9],
                   "many.wisp.errors": [errors], "one.wisp.errors": [0]}, {"wrk_threads": 2})
        return doc

    results = {"throughput": [tput(2.0, 0), tput(4.0, 3)],
               "autoscale": [run({}, notes=["cold burst: 1 of 32 requests failed"])]}
    lines = t.notes(results)
    assert "wrk used 0.40 cores over its 2 threads (20 % of a core each): not saturated" in lines[0]
    assert "90 % busy" in lines[0]
    assert lines[1:] == ["wrk counted 3 errors (non-2xx or socket) against wisp, over all throughput runs.",
                         "autoscale: cold burst: 1 of 32 requests failed"]


def test_section_heads_the_table_with_date_machine_load_and_command() -> None:
    meta = {"date": "2026-11-29 21:40", "command": ".venv/bin/python -P benchmarks/run_all.py", "cores": 2,
            "machine": "Linux x86_64", "python": "3.11.7", "load_start": [0.15, 0.37, 0.55],
            "load_end": [1.2, 0.9, 0.7], "seconds": 600, "quick": False, "repeat": 3,
            "outcome": {"memory": "memory exited 1", "reload": "ok"}}
    text = t.section(meta, t.rows(t.SPECS, {}), {})
    assert text.startswith("## Latest full run: 2026-11-29 21:40\n\n`.venv/bin/python -P benchmarks/run_all.py` "
                           "on 2 cores (`os.cpu_count()`), Linux x86_64, Python 3.11.7; load average (1, 5, 15 min) "
                           "0.15 0.37 0.55 at the start, 1.20 0.90 0.70 at the end; whole run 10.0 min.")
    assert "- FAILED, rows missing: memory: memory exited 1" in text
    assert "Reproduce:" in text
    assert t.section({**meta, "quick": True}, [], {}).startswith("## Quick run")

"""The pure half of `run_all.py`: samples -> median/p99 -> the DESIGN §6 rows -> one markdown table.

No I/O here. A benchmark's results are the JSON that its script writes with `--json` (see
`_results.py`): {"benchmark": ..., "series": {key: {"unit": ..., "values": [...]}}, "figures": {...}}.
`run_all.py` hands `rows()` a mapping benchmark name -> the results of each of its runs (several for
the repeated throughput runs); a series' values are pooled over the runs, so for throughput (one
value per run) median and p99 are over the runs.

A value of None (null in the JSON) means "never happened" (a burst that never reached full scale, a
container that never went away): it counts as infinitely bad, shows as "never", and fails its target.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

Results = Mapping[str, Sequence[Mapping[str, Any]]]  # benchmark -> one results document per run
NEVER = math.inf

BEGIN = "<!-- run_all:begin -->"
END = "<!-- run_all:end -->"


# -- numbers ----------------------------------------------------------------------------------------
def clean(values: Sequence[float | None]) -> list[float]:
    return [NEVER if v is None else float(v) for v in values]


def median(values: Sequence[float | None]) -> float:
    return float(statistics.median(clean(values)))


def p99(values: Sequence[float | None]) -> float:
    """Nearest rank, the rule the scripts print with: below 100 samples this is the maximum."""
    ordered = sorted(clean(values))
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def absmax(values: Sequence[float | None]) -> float:
    return max(abs(v) for v in clean(values))


STATS = {"median": median, "p99": p99, "max": lambda v: max(clean(v)), "min": lambda v: min(clean(v)),
         "absmax": absmax}


def finite(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else x


def series(unit: str, values: Sequence[float | None]) -> dict[str, Any]:
    """One series in the scripts' JSON: the raw values and their summary (null = never / none)."""
    if not values:
        return {"unit": unit, "n": 0, "values": [], "median": None, "p99": None}
    return {"unit": unit, "n": len(values), "values": list(values),
            "median": finite(median(values)), "p99": finite(p99(values))}


def pool(results: Results, benchmark: str, key: str) -> list[float | None] | None:
    """The values of one series over every run of a benchmark; None when no run recorded it."""
    found = [run["series"][key]["values"] for run in results.get(benchmark, ()) if key in run.get("series", {})]
    if not found:
        return None
    return [v for values in found for v in values]


# -- what a row judges ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """One number from one series: its median, p99, max, min or largest |value|."""

    series: str
    how: str = "median"

    def value(self, results: Results, benchmark: str) -> float | None:
        values = pool(results, benchmark, self.series)
        return STATS[self.how](values) if values else None


@dataclass(frozen=True)
class Diff:
    """Added by wisp: the same statistic of two series, subtracted (wisp - baseline)."""

    a: str
    b: str
    how: str = "median"

    def value(self, results: Results, benchmark: str) -> float | None:
        a, b = Stat(self.a, self.how).value(results, benchmark), Stat(self.b, self.how).value(results, benchmark)
        return None if a is None or b is None else a - b


Pick = Union[Stat, Diff]  # noqa: UP007 (a runtime alias: `|` on classes needs 3.10 at import)
OPS = {"<=": "≤", ">=": "≥", "abs<=": "within ±"}


@dataclass(frozen=True)
class Check:
    """`label op limit`, e.g. p50 <= 50: one condition of a DESIGN §6 target."""

    label: str
    pick: Pick
    op: str
    limit: float
    unit: str | None = None  # when not the row's

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}: use one of {', '.join(OPS)}")

    def text(self, unit: str) -> str:
        return f"{self.label} {OPS[self.op]}{'' if self.op == 'abs<=' else ' '}{self.limit:g} {self.unit or unit}"


def shortfall(op: str, value: float, limit: float) -> float:
    """How far value is on the wrong side of the limit (<= 0: met)."""
    if op == "<=":
        return value - limit
    if op == ">=":
        return limit - value
    return abs(value) - limit


@dataclass(frozen=True)
class Judged:
    label: str
    value: float | None  # None: the series is missing (benchmark not run or failed)
    gap: float | None  # > 0: missed by this much
    unit: str = ""
    op: str = "<="
    signed: bool = False  # an added amount or an offset: shown with its sign

    @property
    def met(self) -> bool:
        return self.value is not None and self.gap is not None and self.gap <= 0


def judge(check: Check, value: float | None, unit: str) -> Judged:
    signed = isinstance(check.pick, Diff) or check.op == "abs<=" or check.label.startswith("added")
    gap = None if value is None else shortfall(check.op, value, check.limit)
    return Judged(check.label, value, gap, check.unit or unit, check.op, signed)


MISSED = {"<=": "over", ">=": "short", "abs<=": "outside"}


def verdict(judged: Sequence[Judged]) -> str:
    """The met? cell: yes / no, each judged number shown, and by how much each missed."""
    if not judged:
        return "n/a (no target)"
    if any(j.value is None for j in judged):
        return "not measured"
    parts = []
    for j in judged:
        assert j.value is not None and j.gap is not None
        if math.isinf(j.value):
            shown = f"{j.label} never"
        else:
            shown = f"{j.label} {fmt(j.value, signed=j.signed)} {j.unit}"
            if not j.met:
                shown += f" ({fmt(j.gap)} {j.unit} {MISSED[j.op]})"
        parts.append(shown)
    return ("yes: " if all(j.met for j in judged) else "no: ") + ", ".join(parts)


# -- rows -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    label: str
    series: str


@dataclass(frozen=True)
class RowSpec:
    """One line of the table. `measure` may name figures in braces: "burst of {burst_n}"."""

    measure: str
    benchmark: str
    unit: str
    wisp: str | None
    baselines: tuple[Baseline, ...] = ()
    checks: tuple[Check, ...] = ()
    anchor: str = ""  # the target column when there are no checks


@dataclass(frozen=True)
class Cell:
    median: float | None
    p99: float | None
    n: int


@dataclass(frozen=True)
class Row:
    measure: str
    unit: str
    wisp: Cell | None
    baselines: tuple[tuple[str, Cell | None], ...]
    target: str
    met: str
    ok: bool | None  # None: nothing to judge


def cell(results: Results, benchmark: str, key: str | None) -> Cell | None:
    values = pool(results, benchmark, key) if key else None
    if not values:
        return None
    return Cell(median(values), p99(values), len(values))


class _Figures(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "?"


def build(spec: RowSpec, results: Results) -> Row:
    figures = _Figures()
    for run in results.get(spec.benchmark, ()):
        figures.update(run.get("figures", {}))
    judged = [judge(c, c.pick.value(results, spec.benchmark), spec.unit) for c in spec.checks]
    return Row(
        measure=spec.measure.format_map(figures),
        unit=spec.unit,
        wisp=cell(results, spec.benchmark, spec.wisp),
        baselines=tuple((b.label, cell(results, spec.benchmark, b.series)) for b in spec.baselines),
        target=", ".join(c.text(spec.unit) for c in spec.checks) or spec.anchor or "—",
        met=verdict(judged),
        ok=None if not judged else all(j.met for j in judged),
    )


def rows(specs: Sequence[RowSpec], results: Results) -> list[Row]:
    return [build(spec, results) for spec in specs]


# The DESIGN §6 measures, in the order of the table. Series keys are what the scripts record.
MS, S, MB = "ms", "s", "MB"
SPECS: tuple[RowSpec, ...] = (
    RowSpec("cold start, new deploy -> response: default runtime", "cold_warm", MS, "cold.wisp",
            (Baseline("wisp fresh process", "cold.fresh"), Baseline("uvicorn process start", "cold.direct")),
            (Check("p50", Stat("cold.wisp"), "<=", 50), Check("p99", Stat("cold.wisp", "p99"), "<=", 150))),
    RowSpec("cold start in the sandbox (issue 15): new deploy -> response", "sandbox", MS, "cold.sandbox",
            (Baseline("zygote runtime, no sandbox", "cold.zygote"),), (Check("p50", Stat("cold.sandbox"), "<=", 25),)),
    RowSpec("cold start, scaled to zero by the idle timeout -> response", "autoscale", MS, "cold_idle.wisp", (),
            (Check("p50", Stat("cold_idle.wisp"), "<=", 50), Check("p99", Stat("cold_idle.wisp", "p99"), "<=", 150))),
    RowSpec("warm request, one keep-alive connection (square webhook)", "cold_warm", MS, "warm.wisp",
            (Baseline("direct uvicorn", "warm.direct"),),
            (Check("added p50", Diff("warm.wisp", "warm.direct"), "<=", 0.15),)),
    RowSpec("burst: {burst_n} concurrent 1 s requests -> {burst_n} containers ready or busy", "autoscale", S,
            "burst.cold.full_s", (Baseline("onto warm containers", "burst.warm.full_s"),),
            (Check("p50", Stat("burst.cold.full_s"), "<=", 1), Check("non-200", Stat("burst.cold.failed", "max"), "<=", 0, "requests"))),
    RowSpec("idle scale-down: 0 containers at idle timeout + x ({idle_timeouts} s)", "autoscale", S, "idle.offset_s", (),
            (Check("worst", Stat("idle.offset_s", "absmax"), "abs<=", 2),)),
    RowSpec("idle container memory, PSS", "memory", MB, "pss.zygote",
            (Baseline("wisp fresh process", "pss.fresh"), Baseline("uvicorn", "pss.uvicorn")),
            (Check("p50", Stat("pss.zygote"), "<=", 25),)),
    RowSpec("idle container memory, private", "memory", MB, "private.zygote",
            (Baseline("wisp fresh process", "private.fresh"), Baseline("uvicorn", "private.uvicorn")),
            (Check("p50", Stat("private.zygote"), "<=", 10),)),
    RowSpec("idle cost per deployed function scaled to zero ({apps} apps x {functions} webhooks), PSS", "idle_cost", MB,
            "per_function.wisp", (Baseline("one zygote per app, no bound", "per_function.unbounded"),
                                  Baseline("one zygote per function", "per_function.per_function")),
            (Check("p50", Stat("per_function.wisp"), "<=", 1),)),
    RowSpec("cold start after scale to zero, function zygote released (re-created from the image zygote)",
            "idle_cost", MS, "cold.function_released", (Baseline("function zygote warm", "cold.warm_zygote"),),
            (Check("p50", Stat("cold.function_released"), "<=", 50),
             Check("p99", Stat("cold.function_released", "p99"), "<=", 150))),
    RowSpec("cold start after scale to zero, image zygote released too", "idle_cost", MS, "cold.image_released", (),
            (Check("p50", Stat("cold.image_released"), "<=", 1000),)),
    RowSpec("throughput at {connections} connections, requests/s (wrk)", "throughput", "req/s", "many.wisp.rps",
            (Baseline("direct uvicorn", "many.direct.rps"), Baseline("nginx proxy", "many.nginx.rps")),
            (Check("wisp/direct", Stat("ratio.wisp_pct"), ">=", 85, "%"),)),
    RowSpec("latency p50 at 1 connection (wrk)", "throughput", MS, "one.wisp.p50",
            (Baseline("direct uvicorn", "one.direct.p50"), Baseline("nginx proxy", "one.nginx.p50")),
            (Check("added p50", Stat("added_p50.wisp"), "<=", 0.15),)),
    RowSpec("default settings (plain `def` webhook, one input per container): throughput at {connections} "
            "connections, requests/s (wrk)", "throughput", "req/s", "many.wisp_default.rps",
            (Baseline("direct uvicorn", "many.direct.rps"), Baseline("no capacity rule", "many.wisp_uncapped.rps")),
            (Check("wisp/direct", Stat("ratio.wisp_default_pct"), ">=", 85, "%"),)),
    RowSpec("default settings (plain `async def` webhook): throughput at {connections} connections, requests/s (wrk)",
            "throughput", "req/s", "many.wisp_default_async.rps", (Baseline("direct uvicorn", "many.direct.rps"),),
            (Check("wisp/direct", Stat("ratio.wisp_default_async_pct"), ">=", 85, "%"),)),
    RowSpec("default settings (plain `def` webhook): latency p50 at 1 connection (wrk)", "throughput", MS,
            "one.wisp_default.p50", (Baseline("direct uvicorn", "one.direct.p50"),),
            (Check("added p50", Stat("added_p50.wisp_default"), "<=", 0.15),)),
    RowSpec("default settings (plain `async def` webhook): latency p50 at 1 connection (wrk)", "throughput", MS,
            "one.wisp_default_async.p50", (Baseline("direct uvicorn", "one.direct.p50"),),
            (Check("added p50", Stat("added_p50.wisp_default_async"), "<=", 0.15),)),
    RowSpec("proxy CPU per request at {connections} connections", "throughput", "µs", "many.wisp.cpu_us",
            (Baseline("nginx proxy", "many.nginx.cpu_us"),),
            (Check("p50", Stat("many.wisp.cpu_us"), "<=", 60),)),
    RowSpec("redeploy x{redeploys} then scale-down, under {clients} clients: failed requests", "redeploy", "requests",
            "failed.wisp", (Baseline("uvicorn restarted instead", "failed.uvicorn"),),
            (Check("failed", Stat("failed.wisp", "max"), "<=", 0),)),
    RowSpec("live reload: edit -> new code served", "reload", S, "reload.wisp",
            (Baseline("uvicorn --reload", "reload.uvicorn"),), (Check("p50", Stat("reload.wisp"), "<=", 2),)),
    RowSpec("image pip_install(requests): cold build, uv cache warm", "images", MS, "build.wisp",
            (Baseline("2 plain uv commands", "build.baseline"),), (Check("p50", Stat("build.wisp"), "<=", 1500),)),
    RowSpec("image pip_install(requests): cached resolve", "images", MS, "resolve.wisp", (),
            (Check("p50", Stat("resolve.wisp"), "<=", 100),)),
    RowSpec("streaming: chunk sent -> received", "http_gateway", MS, "stream.wisp",
            (Baseline("direct uvicorn", "stream.direct"),),
            (Check("added p50", Diff("stream.wisp", "stream.direct"), "<=", 0.15),)),
    RowSpec("WebSocket round trip, 32 B text", "http_gateway", MS, "ws.wisp",
            (Baseline("direct uvicorn", "ws.direct"),),
            (Check("added p50", Diff("ws.wisp", "ws.direct"), "<=", 0.15),)),
    RowSpec("server CPU per request with {routes} routes ({apps} apps), wrk -c8", "many_apps", "µs", "cpu_us.many",
            (Baseline("one route", "cpu_us.one"),), (Check("more than one route", Stat("cpu_pct.many"), "<=", 5, "%"),)),
    RowSpec("`wisp deploy` of an app with {big} functions, warm image", "many_apps", S, "deploy.big",
            (Baseline("one function", "deploy.small"),), (Check("p50", Stat("deploy.big"), "<=", 2),)),
    RowSpec("`wisp app list` with {apps} apps", "many_apps", MS, "list_ms.many",
            (Baseline("one app", "list_ms.one"),), (Check("p50", Stat("list_ms.many"), "<=", 300),)),
    RowSpec("cold start, numpy + pandas imported at the top: forked from the function zygote", "heavy_imports", MS,
            "cold.zygote", (Baseline("fresh interpreter", "cold.fresh"), Baseline("bare import", "import.bare")),
            (Check("p50", Stat("cold.zygote"), "<=", 30),)),
    RowSpec("two gateway workers (SO_REUSEPORT) on {containers} containers, wrk -c{connections}, requests/s",
            "gateway_workers", "req/s", "w2.rps", (Baseline("one worker", "w1.rps"),),
            (Check("two / one", Stat("ratio_pct"), ">=", 100, "%"),)),
)


# -- markdown ---------------------------------------------------------------------------------------
def fmt(x: float | None, signed: bool = False) -> str:
    """Three significant figures or so: 823, 42.5, 1.23, 0.052; whole numbers bare; "never" for infinity."""
    if x is None:
        return "—"
    if math.isinf(x):
        return "never"
    if x == int(x):
        return f"{int(x):+d}" if signed else f"{int(x)}"
    size = abs(x)
    digits = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 else 3
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def markdown(table: Sequence[Row]) -> str:
    lines = ["| measure | unit | wisp median | wisp p99 | n | baselines: median / p99 | target | met? |",
             "|---|---|---|---|---|---|---|---|"]
    for row in table:
        w = row.wisp
        base = "; ".join(f"{label} {fmt(c.median)} / {fmt(c.p99)}" if c else f"{label} —"
                         for label, c in row.baselines) or "—"
        lines.append(f"| {row.measure} | {row.unit} | {fmt(w.median) if w else '—'} | {fmt(w.p99) if w else '—'} | "
                     f"{w.n if w else 0} | {base} | {row.target} | {row.met} |")
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """text with everything between the run_all markers replaced by section (markers kept)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} section found: add the two markers where the latest run goes")
    return text[: start + len(BEGIN)] + "\n" + section.strip("\n") + "\n" + text[end:]


def wrk_note(cpu_seconds: float, wall_seconds: float, threads: int) -> str:
    """Whether wrk itself could have capped a run: its CPU against one core per thread."""
    cores = cpu_seconds / wall_seconds if wall_seconds > 0 else 0.0
    per_thread = cores / threads
    state = "saturated: the load generator may be the limit" if per_thread >= 0.9 else "not saturated"
    return (f"wrk used {cores:.2f} cores over its {threads} threads ({100 * per_thread:.0f} % of a core each): "
            f"{state}")


def load_text(load: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def notes(results: Results) -> list[str]:
    """The lines under the table: is wrk the limit, errors seen, what the scripts flagged."""
    lines = []
    threads = next((run["figures"].get("wrk_threads") for run in results.get("throughput", ())), None)
    if threads:
        worst = None
        for side in ("direct", "wisp", "nginx"):
            cpu, wall = pool(results, "throughput", f"wrk.{side}.cpu_s"), pool(results, "throughput", f"wrk.{side}.wall_s")
            for c, w in zip(cpu or (), wall or ()):
                if c is not None and w and (worst is None or c / w > worst[0] / worst[1]):
                    worst = (c, w, side)
        if worst:
            busy = [b for side in ("direct", "wisp", "nginx") for b in pool(results, "throughput", f"machine_busy.{side}") or ()
                    if b is not None]
            lines.append(f"Load generator: wrk (`-t{threads} -c<conns> --latency`). Busiest run ({worst[2]}): "
                         f"{wrk_note(worst[0], worst[1], threads)}; all cores together were "
                         f"{100 * max(busy):.0f} % busy at most (wrk, proxy and app share the machine).")
        for side in ("direct", "wisp", "nginx"):
            errors = sum(e or 0 for key in ("many", "one") for e in pool(results, "throughput", f"{key}.{side}.errors") or ())
            if errors:
                lines.append(f"wrk counted {errors:g} error{'s' if errors != 1 else ''} (non-2xx or socket) against "
                             f"{side}, over all throughput runs.")
    for name, runs in results.items():
        for run in runs:
            lines.extend(f"{name}: {note}" for note in run.get("notes", ()))
    return lines


def section(meta: Mapping[str, Any], table: Sequence[Row], results: Results) -> str:
    """The whole "latest run" section: heading, machine and load, the table, notes, how to reproduce."""
    title = ("## Quick run (checks the machinery; too short to quote)" if meta["quick"]
             else "## Latest full run")
    load_end = meta.get("load_end")
    head = (f"{title}: {meta['date']}\n\n`{meta['command']}` on {meta['cores']} cores (`os.cpu_count()`), "
            f"{meta['machine']}, Python {meta['python']}; load average (1, 5, 15 min) {load_text(meta['load_start'])} "
            f"at the start, {load_text(load_end) if load_end else '?'} at the end; whole run "
            f"{meta.get('seconds', 0) / 60:.1f} min.")
    repeat = meta["repeat"]
    how = [f"wisp median and p99 over a row's samples (n); p99 is the nearest rank, so the maximum below 100 "
           f"samples. Throughput rows: {repeat} runs of `throughput.py`, one value per run, so median and p99 "
           f"are over the runs; added p50 and % of direct are judged on the median of the per-run figures.",
           "Baselines run in the same invocation: direct uvicorn, nginx (1 worker, upstream keep-alive) in "
           "front of the same uvicorn, a wisp container started as a fresh process (`WISP_RUNTIME=local`) "
           "against the default runtime, uvicorn restarted where wisp redeploys, `uvicorn --reload`, "
           "two plain uv commands, the zygote runtime beside the sandbox. wisp's own rows run the default "
           "runtime (`auto`: the sandbox where the kernel allows it, as on this machine) unless a row "
           "names another; memory and idle cost count the zygotes (and the sandbox's pid-namespace "
           "helpers) behind the containers."]
    failed = [f"{name}: {outcome}" for name, outcome in meta.get("outcome", {}).items() if outcome != "ok"]
    if failed:
        how.append("FAILED, rows missing: " + "; ".join(failed))
    for stem, stopped in meta.get("leftovers", {}).items():
        how.append(f"{stem} left {len(stopped)} processes running after it exited; run_all stopped them: "
                   + "; ".join(f"`{p}`" for p in stopped[:3]))
    bullets = "\n".join(f"- {line}" for line in [*how, *notes(results)])
    reproduce = ("Reproduce: `apt-get install -y wrk nginx-light`, then from the repository root "
                 "`.venv/bin/python -P benchmarks/run_all.py --write` (reruns everything and replaces this "
                 "section; `--from DIR` prints a saved run's table again). Each script also runs alone, with "
                 "the options in its docstring; `--json PATH` saves what it measured.")
    return f"{head}\n\n{markdown(table)}\n\n{bullets}\n\n{reproduce}\n"

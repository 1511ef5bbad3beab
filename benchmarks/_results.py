"""`--json PATH` for the benchmark scripts: their measurements in one small shape that run_all reads.

    {"benchmark": "cold_warm", "format": 1, "date": "2026-11-29T21:40:00", "argv": [...],
     "cores": 2, "load_end": [1m, 5m, 15m], "python": "3.11.7",
     "series": {"cold.wisp": {"unit": "ms", "n": 10, "values": [...], "median": 41.2, "p99": 88.0}, ...},
     "figures": {"burst_n": 32, ...},   # settings and single numbers worth keeping
     "notes": ["..."]}

A series holds raw samples (or one figure per run, for scripts run_all repeats); null in
`values` means "never happened". Scripts import this module with the benchmarks folder appended
to sys.path (they run with `python -P`, which leaves the script's folder out).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _table import series

Series = Mapping[str, tuple[str, Sequence[float | None]]]  # key -> (unit, values)


def document(benchmark: str, measured: Series, figures: Mapping[str, Any] | None = None,
             notes: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "format": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv[1:],
        "cores": os.cpu_count(),
        "load_end": list(os.getloadavg()),
        "python": platform.python_version(),
        "series": {key: series(unit, values) for key, (unit, values) in measured.items()},
        "figures": dict(figures or {}),
        "notes": list(notes),
    }


def write(path: str | None, benchmark: str, measured: Series, figures: Mapping[str, Any] | None = None,
          notes: Sequence[str] = ()) -> None:
    """Write the document to path; nothing when path is None (the script ran without --json)."""
    if path is None:
        return
    Path(path).write_text(json.dumps(document(benchmark, measured, figures, notes), indent=1) + "\n")

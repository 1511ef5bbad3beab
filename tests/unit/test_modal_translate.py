"""`modal app logs --search/--function/--source` over wisp's app log (translate.log_filter)."""
from __future__ import annotations

import pytest

from wisp.server.modal_api.translate import LogLine, log_filter

LOGGED = [
    LogLine("10:00:00 [wisp] container c1 of f ready in 0.02 s", 1.0, True),
    LogLine("10:00:01 [f c1] hello from f", 2.0, False),
    LogLine("10:00:02 [g c2] hello from g", 3.0, False),
    LogLine("10:00:03 [f.method c3] a method's line", 4.0, False),
]


@pytest.mark.parametrize(("search", "function", "source", "expected"), [
    ("", None, 0, [0, 1, 2, 3]),
    ("hello", None, 0, [1, 2]),
    ("", "f", 0, [1]),  # not `f.method`'s lines, nor wisp's line naming f
    ("", "g", 0, [2]),
    ("", None, 3, [0]),  # system: wisp's own lines
    ("", None, 1, [1, 2, 3]),  # stdout
    ("", None, 2, [1, 2, 3]),  # stderr: the same stream in wisp
    ("hello", "f", 1, [1]),
    ("nothing", None, 0, []),
])
def test_log_filter(search: str, function: str | None, source: int, expected: list[int]) -> None:
    assert log_filter(LOGGED, search, function, source) == [LOGGED[i] for i in expected]

"""Fault-injection tier (issue 11): kills, SIGTERM, hanging imports, full disks and corrupted state
against a real server. Each test is bounded in time and count, and reports what it sent, what was
answered, what was lost and which processes were left behind (read from /proc).

The fixtures are the end-to-end ones; `leftovers(home)` lists live processes that belong to a home.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.conftest import own_wisp, wisp  # noqa: F401  (fixtures; `tests` is on sys.path, not a package)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.e2e)


def leftovers(home: Path) -> list[str]:
    """Live (non-zombie) processes whose command line, working directory or environment mentions
    `home`: the server, its zygotes and containers, and anything they forked."""
    hint = str(home)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd") + "/"
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (hint in argv or hint in cwd or hint in environ):
            found.append(f"{entry.name} {cwd} {argv}")
    return found


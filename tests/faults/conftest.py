"""Fault-injection tier (issue 11): kills, SIGTERM, hanging imports, full disks and corrupted state
against a real server. Each test is bounded in time and count, and reports what it sent, what was
answered, what was lost and which processes were left behind (read from /proc).

The fixtures are the end-to-end ones; `leftovers(home)` lists live processes that belong to a home.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from e2e.conftest import own_wisp, remove_open_homes, wisp  # noqa: F401  (fixtures; tests/ is on sys.path, it has no __init__.py)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.e2e)


def _stat(pid: int | str) -> list[str] | None:
    """Fields 3 on of /proc/<pid>/stat (state, ppid, pgrp, session, ...), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def leftovers(home: Path) -> list[str]:
    """Live (non-zombie) processes that belong to `home`: whose command line, working directory or
    environment mentions it (the server, containers in `$WISP_HOME/apps/...`, anything they
    started there), whose command line names a zygote socket of that home's server, and every
    other member of those processes' groups (a container's own children, zygotes whose
    environment was scrubbed)."""
    hint = os.path.realpath(home)  # a root test's home is a link (e2e.conftest.open_for_containers)
    run = home / "run" / "run.json"
    sockets = []
    with contextlib.suppress(OSError, ValueError):
        sockets = [str(f) for f in json.loads(run.read_text()).get("folders", [])]
    found: dict[str, str] = {}
    groups: set[str] = set()
    table: dict[str, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd") + "/"
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        stat = _stat(entry.name)
        if stat is None or stat[0] == "Z":
            continue
        table[entry.name] = stat
        if hint in argv or hint in cwd or hint in environ or any(folder in argv for folder in sockets):
            found[entry.name] = f"{entry.name} {cwd} {argv}"
            groups.add(stat[2])
    groups.discard(str(os.getpgrp()))  # a CLI the test runs is in the test's own group
    for pid, stat in table.items():
        if pid not in found and stat[2] in groups:
            with contextlib.suppress(OSError):
                argv = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found[pid] = f"{pid} (group {stat[2]}) {argv}"
    return sorted(found.values())


def descendants(pid: int) -> dict[int, str]:
    """Every live process below `pid` (children, theirs, ...): pid -> its start time (field 22),
    so that a later look tells the same process from a new one with a reused pid."""
    children: dict[str, list[str]] = {}
    starts: dict[str, str] = {}
    for entry in Path("/proc").iterdir():
        stat = _stat(entry.name) if entry.name.isdigit() else None
        if stat is not None and stat[0] != "Z":
            children.setdefault(stat[1], []).append(entry.name)
            starts[entry.name] = stat[19]
    found: dict[int, str] = {}
    todo = [str(pid)]
    while todo:
        for child in children.get(todo.pop(), []):
            found[int(child)] = starts[child]
            todo.append(child)
    return found


def still_alive(processes: dict[int, str]) -> list[str]:
    """Those of `processes` (from `descendants`) still running, as the same process."""
    alive = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z" and stat[19] == started:
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                alive.append(f"{pid} (ppid {stat[1]}) {argv}")
    return alive

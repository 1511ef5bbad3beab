"""What the benchmark scripts read off this machine: a free port, an app's processes, their memory."""
from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_pids(folder: str) -> dict[int, int]:
    """pid -> parent pid of every process working in the app's folder."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(folder):
                    pids[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return pids


def container_pids(folder: str) -> list[int]:
    """The containers: a function's zygote also works in the app's folder, but it is their parent."""
    pids = app_pids(folder)
    return [pid for pid in pids if pid not in pids.values()]


def rollup(pid: int) -> tuple[float, float]:
    """(PSS, private) of a process in MB, from /proc/PID/smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields["Pss"] / 1024, (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...), zombies left out."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parents[int(entry.name)] = int(fields[1])
            except (OSError, ValueError, IndexError):
                continue
    found: list[int] = []
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found.extend(sorted(frontier))
    return found

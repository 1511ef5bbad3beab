"""Finding an app's processes in /proc: containers and zygotes work in the app's folder."""
from __future__ import annotations

import os
from pathlib import Path


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

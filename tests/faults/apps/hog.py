"""A hostile app for tests/faults/test_limits.py: it allocates past its memory limit, fork-bombs
and reports the limits it finds itself under (read from its own cgroup files)."""
import os
import time
from pathlib import Path

import wisp

app = wisp.App("limits-hog")
CHUNK = 16 << 20


def _own(controller: str) -> str | None:
    """This process's cgroup folder for `controller` (v1), or its v2 folder."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return f"/sys/fs/cgroup/{controller}{path}"
    for line in lines:
        if line.startswith("0::"):
            return "/sys/fs/cgroup" + line[3:]
    return None


def _read(folder: str | None, name: str) -> str | None:
    try:
        with open(f"{folder}/{name}") as f:
            return f.read().strip()
    except (OSError, TypeError):
        return None


@app.function(memory=(64, 160), cpu=(0.25, 0.5))
@wisp.fastapi_endpoint()
def grow(mb: int = 0) -> dict[str, object]:
    """Hold `mb` MiB (touched, so the kernel charges it); 0: only say which container this is
    (its pid, and its pid namespace: a sandboxed container is pid 1 of its own)."""
    held = []
    for _ in range(mb // 16):
        held.append(b"\x01" * CHUNK)
    return {"pid": f"{os.getpid()} {os.readlink('/proc/self/ns/pid')}", "held_mb": 16 * len(held)}


@app.function(memory=(64, 160), cpu=(0.25, 0.5))
@wisp.fastapi_endpoint()
def limits() -> dict[str, object]:
    """What the kernel enforces on this container, read from its own cgroup files."""
    memory, pids, cpu = _own("memory"), _own("pids"), _own("cpu")
    return {
        "cgroup": Path("/proc/self/cgroup").read_text(),
        "memory_bytes": _read(memory, "memory.limit_in_bytes") or _read(memory, "memory.max"),
        "pids_max": _read(pids, "pids.max"),
        "cfs_quota_us": _read(cpu, "cpu.cfs_quota_us"),
        "cfs_period_us": _read(cpu, "cpu.cfs_period_us"),
        "cpu_max": _read(cpu, "cpu.max"),
        "uid": os.getuid(),
        "policy": os.sched_getscheduler(0),
    }


@app.function()
@wisp.fastapi_endpoint()
def bomb(hold: float = 5.0, bound: int = 200, checked: int = 0) -> dict[str, object]:
    """A fork bomb: every process forks again and again until the kernel refuses. It only goes off
    under a pids limit of at most `bound` (so a broken limit cannot take the machine down), and
    every process it made exits after `hold` seconds. A sandboxed container cannot read its own
    pids.max: `checked` is the limit the caller read for it on the host (its slot, from the
    `cgroup` this answers with)."""
    pids = _own("pids")
    limit = _read(pids, "pids.max") or (str(checked) if checked else None)
    cgroup = Path("/proc/self/cgroup").read_text()
    if limit is None or not limit.isdigit() or int(limit) > bound:
        return {"went_off": False, "pids_max": limit, "cgroup": cgroup}
    refused = 0
    deadline = time.monotonic() + hold
    me = os.getpid()
    while time.monotonic() < deadline:
        try:
            child = os.fork()
        except OSError:
            refused += 1
            if refused >= 20:  # the limit holds: stop trying, hold what was made
                break
            time.sleep(0.01)
            continue
        if child == 0:  # a child bombs too, until it is refused, then holds its place
            refused = 0
            continue
    if os.getpid() != me:
        time.sleep(max(0.0, deadline - time.monotonic()))
        os._exit(0)
    return {"went_off": True, "pids_max": limit, "pids_current": _read(pids, "pids.current"), "refused": refused,
            "cgroup": cgroup}


@app.function()
@wisp.fastapi_endpoint()
def alive() -> dict[str, int]:
    return {"pid": os.getpid()}

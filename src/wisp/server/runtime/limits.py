"""Enforced limits (issue 15, point 2), the pure part: what a container may use, and which cgroup
files say so, for cgroup v1 and v2. `slots.py` carries the plans out.

A function's `cpu=` and `memory=` are reservations (Modal's meaning; `capacity.py` places by
them) and, here, the floor of two ceilings: a container's hard memory limit is the larger of its
`memory=` and `WISP_MEMORY_LIMIT_MB` (default 1024 MiB, never more than half the machine), and its
CFS quota the larger of its `cpu=` and `WISP_CPU_CEILING` (default 1 core, never more than the
machine). Modal's tuples give both at once: `memory=(request, limit)`, `cpu=(request, limit)`.
Every container also gets `WISP_PIDS_LIMIT` tasks (processes and threads, default 512: a fork
bomb stops there) and a `/tmp` of `ephemeral_disk=` MiB (default `WISP_TMP_SIZE_MB`, 512; the
sandbox mounts it, and being a tmpfs it counts toward the memory limit too).

Where a container's limits live: a *slot*, one cgroup per controller (v1) or one cgroup (v2)
made by the server ahead of the start, which the child joins as the very first thing it does
(`wisp._runtime.cgroup`). In v2 a non-root process may move itself only between cgroups below a
common ancestor it may write to, so each app's slots (its function zygotes' and its containers')
lie below an `app-<uid>` cgroup delegated to the app's uid.
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from .capacity import positive_setting
from .cluster.placement import DEFAULT_CPU, DEFAULT_MEMORY_MB

CONTROLLERS = ("memory", "pids", "cpu")
LIMITS_ENV = "WISP_LIMITS"  # "0": no cgroup limits at all (a benchmark's baseline; said at start)
MEMORY_LIMIT_ENV = "WISP_MEMORY_LIMIT_MB"
CPU_CEILING_ENV = "WISP_CPU_CEILING"
PIDS_LIMIT_ENV = "WISP_PIDS_LIMIT"
TMP_SIZE_ENV = "WISP_TMP_SIZE_MB"
DEFAULT_MEMORY_LIMIT_MB = 1024
DEFAULT_CPU_CEILING = 1.0
DEFAULT_PIDS_LIMIT = 512
DEFAULT_TMP_SIZE_MB = 512
CFS_PERIOD_US = 100_000
# What a controller missing costs, said once at server start.
WITHOUT = {
    "memory": "containers run without a memory limit (one container can take all memory)",
    "pids": "containers run without a pids limit (a fork bomb is not stopped)",
    "cpu": "containers run without a CPU ceiling (one container can take every core)",
}


@dataclass(frozen=True)
class Defaults:
    """The server-wide defaults (environment variables, documented in the README)."""

    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    cpu_ceiling: float = DEFAULT_CPU_CEILING
    pids: int = DEFAULT_PIDS_LIMIT
    tmp_size_mb: int = DEFAULT_TMP_SIZE_MB


def defaults_from_env(environ: Mapping[str, str]) -> Defaults:
    """The defaults, or ValueError naming the variable that is not a positive number."""
    def number(name: str, default: float, kind: type[int] | type[float]) -> float:
        what = "a whole number" if kind is int else "a number"
        value = positive_setting(environ, name, kind, what, f"for the default ({default:g})")
        return default if value is None else value

    return Defaults(int(number(MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT_MB, int)),
                    number(CPU_CEILING_ENV, DEFAULT_CPU_CEILING, float),
                    int(number(PIDS_LIMIT_ENV, DEFAULT_PIDS_LIMIT, int)),
                    int(number(TMP_SIZE_ENV, DEFAULT_TMP_SIZE_MB, int)))


@dataclass(frozen=True)
class Limits:
    """What one container of a function may use."""

    memory_mb: int  # hard: past it the kernel kills the container (out of memory)
    pids: int  # processes and threads
    cpu: float  # the reservation, as a relative weight against other containers
    cpu_ceiling: float | None  # cores of CFS quota; None: no ceiling
    tmp_size_mb: int  # the size of its /tmp


def limits_for(cpu: float | None, cpu_limit: float | None, memory: int | None, memory_limit: int | None,
               ephemeral_disk: int | None, defaults: Defaults, cores: float, machine_mb: int) -> Limits:
    """A function's limits from its decorator (`cpu_limit`/`memory_limit`: the second member of
    Modal's tuples), the server's defaults and the machine (`machine_mb` 0: unknown)."""
    request_mb = DEFAULT_MEMORY_MB if memory is None else memory
    if memory_limit is not None:
        memory_mb = memory_limit
    else:
        ceiling = defaults.memory_limit_mb if machine_mb <= 0 else min(defaults.memory_limit_mb, max(machine_mb // 2, 1))
        memory_mb = max(request_mb, ceiling)
    request_cpu = DEFAULT_CPU if cpu is None else cpu
    ceiling_cpu = cpu_limit if cpu_limit is not None else max(request_cpu, defaults.cpu_ceiling)
    quota: float | None = ceiling_cpu if ceiling_cpu < cores else None  # a quota of the whole machine limits nothing
    return Limits(memory_mb, defaults.pids, request_cpu, quota,
                  ephemeral_disk if ephemeral_disk is not None else defaults.tmp_size_mb)


# -- where the controllers are ------------------------------------------------------------------
@dataclass(frozen=True)
class Hierarchy:
    """The cgroup controllers this process can use: `version` 1 (a folder per controller, as on
    hybrid systems) or 2 (one folder for all), each controller's folder for this process's own
    cgroup, and the v2 mount. Empty `folders`: no cgroups to be had."""

    version: int
    folders: Mapping[str, str]  # controller -> this process's cgroup folder in its hierarchy
    missing: Mapping[str, str]  # controller -> why it cannot be used
    at_root: bool = False  # v2: this process is in the root cgroup (which may hold processes and hand on controllers)


def _own_path(mount_root: str, own: str) -> str | None:
    """Our cgroup relative to a mount whose root is `mount_root` (a container's view may mount a
    subtree); None when our cgroup is not below it."""
    if mount_root == "/":
        return own
    if own == mount_root or own.startswith(mount_root.rstrip("/") + "/"):
        return "/" + own[len(mount_root):].lstrip("/")
    return None


def find_hierarchy(mountinfo: str, proc_cgroup: str, v2_controllers: str | None = None) -> Hierarchy:
    """Which controllers to use, from /proc/self/mountinfo and /proc/self/cgroup (and, for v2,
    the `cgroup.controllers` of our own cgroup). A controller mounted as v1 is used there (hybrid
    systems leave v2 empty); only when none is, v2."""
    own_v1: dict[str, str] = {}
    own_v2: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            own_v2 = parts[2]
        for name in parts[1].split(","):
            own_v1[name] = parts[2]
    v1: dict[str, str] = {}
    v2_mount: str | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root, mountpoint, fstype, options = fields[3], fields[4], tail[0], tail[2].split(",")
        if fstype == "cgroup2" and v2_mount is None:
            v2_mount = mountpoint
        elif fstype == "cgroup":
            for name in CONTROLLERS:
                if name in options and name not in v1 and name in own_v1:
                    relative = _own_path(root, own_v1[name])
                    if relative is not None:
                        v1[name] = posixpath.join(mountpoint, relative.lstrip("/")).rstrip("/")
    if v1:
        v1 = {name: v1[name] for name in CONTROLLERS if name in v1}  # one order, whatever the mounts'
        missing = {name: f"no {name} controller in the cgroup v1 hierarchy" for name in CONTROLLERS if name not in v1}
        return Hierarchy(1, v1, missing)
    if v2_mount is not None and own_v2 is not None:
        folder = posixpath.join(v2_mount, own_v2.lstrip("/")).rstrip("/")
        enabled = set((v2_controllers or "").split())
        folders = {name: folder for name in CONTROLLERS if name in enabled}
        missing = {name: f"the cgroup v2 controller {name} is not available in {folder}"
                   for name in CONTROLLERS if name not in enabled}
        return Hierarchy(2, folders, missing, at_root=own_v2 == "/")
    return Hierarchy(0, {}, {name: "no cgroup file system is mounted" for name in CONTROLLERS})


# -- what to write ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mkdir:
    path: str


@dataclass(frozen=True)
class Write:
    path: str
    value: str
    optional: bool = False  # a file some kernels lack (swap accounting): skipped when absent


@dataclass(frozen=True)
class Chown:
    path: str
    uid: int
    gid: int


Step = Mkdir | Write | Chown


@dataclass(frozen=True)
class Base:
    """Where this server's slots go: a folder per controller (v1), or one folder (v2)."""

    version: int
    folders: Mapping[str, str]  # controller -> the server's folder for slots


def base_of(hierarchy: Hierarchy, name: str) -> Base:
    return Base(hierarchy.version, {c: posixpath.join(folder, name) for c, folder in hierarchy.folders.items()})


def _v2_enable(controllers: list[str]) -> str:
    return " ".join(f"+{name}" for name in controllers)


# The kernel's bounds and its weight of one plain process (nice 0): v1 cpu.shares, v2 cpu.weight.
SHARES = {1: (2, 262_144, 1024), 2: (1, 10_000, 100)}


def base_weight(version: int, cores: float) -> int:
    """The CPU weight of the folder that holds every container, against the processes beside it
    (the server itself above all): as much as the default containers the machine fits (`cores`
    over Modal's `cpu=0.125`) would weigh as plain processes. With the folder at the kernel's
    default (one process's weight) the server outweighed 16 busy containers on 2 cores, ran at
    every single event and preempted them by IPI: a quarter more CPU per request
    (docs/profiling.md, "The limits' CPU weight")."""
    low, high, one = SHARES[version]
    return max(low, min(high, round(one * max(cores, DEFAULT_CPU) / DEFAULT_CPU)))


def setup_plan(hierarchy: Hierarchy, base: Base, pid: int, cores: float, leaf: str = "wisp-server") -> list[Step]:
    """What makes the server's slot folders, the CPU weight of them all (`base_weight`). v2 only
    lets a cgroup without processes hand its controllers to children, so the server first moves
    itself into a leaf beside its slots (unless it is in the root cgroup, which is exempt)."""
    if hierarchy.version == 1:
        steps: list[Step] = [Mkdir(folder) for folder in base.folders.values()]
        if "cpu" in base.folders:
            steps.append(Write(f"{base.folders['cpu']}/cpu.shares", str(base_weight(1, cores))))
        return steps
    if hierarchy.version != 2 or not base.folders:
        return []
    own = next(iter(hierarchy.folders.values()))
    folder = next(iter(base.folders.values()))
    controllers = [c for c in CONTROLLERS if c in base.folders]
    steps = []
    if not hierarchy.at_root:
        steps += [Mkdir(posixpath.join(own, leaf)), Write(posixpath.join(own, leaf, "cgroup.procs"), str(pid))]
    steps += [Write(posixpath.join(own, "cgroup.subtree_control"), _v2_enable(controllers)), Mkdir(folder),
              Write(posixpath.join(folder, "cgroup.subtree_control"), _v2_enable(controllers))]
    if "cpu" in base.folders:
        steps.append(Write(f"{folder}/cpu.weight", str(base_weight(2, cores))))
    return steps


@dataclass(frozen=True)
class SlotPlan:
    """One slot: the steps that make it, the files its process writes 0 (itself) to, to join it
    (v1 `tasks`, v2 `cgroup.procs`), and where the kernel counts its out-of-memory kills."""

    steps: tuple[Step, ...]
    folders: tuple[str, ...]  # removed (deepest first) when the slot is done with
    procs: tuple[str, ...]
    oom_file: str | None  # v1 memory.oom_control, v2 memory.events: a line "oom_kill N"


def app_folder(base: Base, uid: int | None) -> str | None:
    """v2: the folder of an app's slots, delegated to its uid; None in v1 (no such folder)."""
    if base.version != 2 or not base.folders:
        return None
    return posixpath.join(next(iter(base.folders.values())), f"app-{uid if uid is not None else 'server'}")


def app_plan(base: Base, owner: tuple[int, int] | None) -> list[Step]:
    """v2: an app's folder, its controllers handed on to its slots, and the file a process of the
    app must be able to write to move itself between them (the common ancestor's cgroup.procs).
    Never the folder itself: an app that could make a cgroup in it could move into one without
    limits. Nor can it join the folder: it hands on controllers, so it may hold no process."""
    folder = app_folder(base, owner[0] if owner else None)
    if folder is None:
        return []
    controllers = [c for c in CONTROLLERS if c in base.folders]
    steps: list[Step] = [Mkdir(folder), Write(posixpath.join(folder, "cgroup.subtree_control"), _v2_enable(controllers))]
    if owner is not None:
        steps.append(Chown(posixpath.join(folder, "cgroup.procs"), *owner))
    return steps


def slot_plan(base: Base, name: str, limits: Limits, owner: tuple[int, int] | None) -> SlotPlan:
    """The slot `name` with `limits`, joinable by `owner` (uid, gid; None: a root process joins,
    as a function zygote does before it drops to the app's uid)."""
    if base.version == 2:
        return _slot_v2(base, name, limits, owner)
    steps: list[Step] = []
    folders, procs = [], []
    oom_file = None
    for controller, root in base.folders.items():
        folder = posixpath.join(root, name)
        steps.append(Mkdir(folder))
        if controller == "memory":
            limit = str(limits.memory_mb << 20)
            steps += [Write(f"{folder}/memory.limit_in_bytes", limit),
                      Write(f"{folder}/memory.memsw.limit_in_bytes", limit, optional=True)]  # no escape into swap
            oom_file = f"{folder}/memory.oom_control"
        elif controller == "pids":
            steps.append(Write(f"{folder}/pids.max", str(limits.pids)))
        elif controller == "cpu":
            steps += [Write(f"{folder}/cpu.shares", str(max(2, round(1024 * limits.cpu)))),
                      Write(f"{folder}/cpu.cfs_period_us", str(CFS_PERIOD_US)),
                      Write(f"{folder}/cpu.cfs_quota_us", _quota(limits.cpu_ceiling))]
        # The child joins through `tasks` (its one thread, pid 0): a v1 write there takes no global
        # lock, where one to cgroup.procs waits for an RCU grace period (~10 ms) after an idle spell.
        if owner is not None:
            steps.append(Chown(f"{folder}/tasks", *owner))
        folders.append(folder)
        procs.append(f"{folder}/tasks")
    return SlotPlan(tuple(steps), tuple(folders), tuple(procs), oom_file)


def _quota(ceiling: float | None) -> str:
    return "-1" if ceiling is None else str(max(1000, round(ceiling * CFS_PERIOD_US)))


def _slot_v2(base: Base, name: str, limits: Limits, owner: tuple[int, int] | None) -> SlotPlan:
    parent = app_folder(base, owner[0] if owner else None)
    if parent is None:
        return SlotPlan((), (), (), None)
    folder = posixpath.join(parent, name)
    steps: list[Step] = [Mkdir(folder)]
    if "memory" in base.folders:
        steps += [Write(f"{folder}/memory.max", str(limits.memory_mb << 20)),
                  Write(f"{folder}/memory.swap.max", "0", optional=True)]
    if "pids" in base.folders:
        steps.append(Write(f"{folder}/pids.max", str(limits.pids)))
    if "cpu" in base.folders:
        quota = "max" if limits.cpu_ceiling is None else _quota(limits.cpu_ceiling)
        steps += [Write(f"{folder}/cpu.weight", str(min(10_000, max(1, round(100 * limits.cpu))))),
                  Write(f"{folder}/cpu.max", f"{quota} {CFS_PERIOD_US}")]
    if owner is not None:
        steps.append(Chown(f"{folder}/cgroup.procs", *owner))
    return SlotPlan(tuple(steps), (folder,), (f"{folder}/cgroup.procs",),
                    f"{folder}/memory.events" if "memory" in base.folders else None)


def oom_kills(text: str) -> int:
    """The `oom_kill N` count of a v1 memory.oom_control or a v2 memory.events (0 if absent)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def out_of_memory(limit_mb: int) -> str:
    """What a container killed for memory is said to have died of (its 502, its log line)."""
    return f"out of memory (limit {limit_mb} MiB)"


def missing_lines(hierarchy: Hierarchy) -> list[str]:
    """One line per missing piece, printed at server start."""
    return [f"limits: {why}: {WITHOUT[name]}" for name, why in hierarchy.missing.items()]


def machine_cores() -> float:
    return float(os.cpu_count() or 1)


__all__ = ["CONTROLLERS", "Base", "Chown", "Defaults", "Hierarchy", "Limits", "Mkdir", "SlotPlan", "Step", "Write",
           "app_folder", "app_plan", "base_of", "base_weight", "defaults_from_env", "find_hierarchy", "limits_for", "missing_lines",
           "oom_kills", "out_of_memory", "setup_plan", "slot_plan"]

"""Enforced limits, the I/O part: find the cgroups, make the server's folder for slots, make slots
ahead of the containers that join them, read how a container ended, remove what is done with.

`Slots.start()` runs once at server start: it removes the slots an earlier run of this home left
(their folders are in the run record, `groups`), and says in one line per missing piece what
this server runs without. `supply(limits, user)` gives a launcher a `SlotSupply`, which keeps one
slot made ahead, so a container start only hands a ready slot's `cgroup.procs` paths to the child
(the plan, `limits.slot_plan`, takes about half a millisecond to carry out: off the fork path).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import signal
import time
from collections.abc import Iterable

from ..isolation import AppUser
from . import groups
from .limits import (
    Base,
    Chown,
    Defaults,
    Hierarchy,
    Limits,
    Mkdir,
    SlotPlan,
    Step,
    Write,
    app_plan,
    base_of,
    find_hierarchy,
    machine_cores,
    missing_lines,
    oom_kills,
    out_of_memory,
    setup_plan,
    slot_plan,
)

REMOVE_TRIES = 50  # a slot whose processes were just killed empties within a few tries
REMOVE_EVERY = 0.1  # seconds between tries


def run_steps(steps: Iterable[Step]) -> None:
    """Carry out a plan; an OSError names the file that refused."""
    for step in steps:
        if isinstance(step, Mkdir):
            with contextlib.suppress(FileExistsError):
                os.mkdir(step.path)
        elif isinstance(step, Write):
            try:
                with open(step.path, "w") as f:
                    f.write(step.value)
            except FileNotFoundError:
                if not step.optional:
                    raise
        elif isinstance(step, Chown):
            os.chown(step.path, step.uid, step.gid)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def kill_all(folder: str) -> int:
    """SIGKILL every process in a cgroup folder (whatever process group or session it made)."""
    killed = 0
    for pid in _read(os.path.join(folder, "cgroup.procs")).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
    return killed


def remove_folder(folder: str) -> bool:
    """Remove a cgroup folder and those below it, killing what runs in them; False if one is
    still busy (its processes not yet gone)."""
    if not os.path.isdir(folder):
        return True
    done = True
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                done = remove_folder(entry.path) and done
    kill_all(folder)
    try:
        os.rmdir(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return exc.errno != errno.EBUSY  # busy: try again; else not ours (permission), waiting will not help
    return done


def remove_now(folders: Iterable[str], timeout: float = 2.0) -> list[str]:
    """Remove folders, waiting up to `timeout` for killed processes to go; those left."""
    left = list(folders)
    deadline = time.monotonic() + timeout
    while left:
        left = [f for f in left if not remove_folder(f)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return left


class Slot:
    """One container's (or function zygote's) cgroups, made and not yet removed."""

    def __init__(self, plan: SlotPlan, limits: Limits, slots: Slots) -> None:
        self.plan = plan
        self.limits = limits
        self._slots = slots
        self._oom: int | None = None  # kills counted when its process exited

    @property
    def procs(self) -> list[str]:
        """The files the child writes 0 (itself) to (`wisp._runtime.cgroup.join`)."""
        return list(self.plan.procs)

    def oom_killed(self) -> bool:
        if self._oom is not None:
            return self._oom > 0
        return self.plan.oom_file is not None and oom_kills(_read(self.plan.oom_file)) > 0

    def out_of_memory(self) -> str | None:
        """'out of memory (limit N MiB)' if the kernel killed something in it for memory."""
        return out_of_memory(self.limits.memory_mb) if self.oom_killed() else None

    def done(self) -> None:
        """Its process has exited: keep what the kernel counted, then remove it (and kill what
        its process left behind in it, whatever group those made)."""
        if self._oom is None:
            self._oom = oom_kills(_read(self.plan.oom_file)) if self.plan.oom_file else 0
        self._slots.remove(self)


class Slots:
    """This server's cgroup slots. `available` is False where there are no cgroups to use (then
    every supply hands out None, and containers run as before, which start() said)."""

    def __init__(self, hierarchy: Hierarchy, defaults: Defaults, base: Base | None = None) -> None:
        self.hierarchy = hierarchy
        self.defaults = defaults
        self.base = base or Base(0, {})
        self._names = itertools.count(1)
        self._apps: set[int | None] = set()  # v2 app folders made
        self._live: set[Slot] = set()
        self._removing: dict[Slot, int] = {}  # slot -> tries left
        self.problems: list[str] = []

    @property
    def available(self) -> bool:
        return bool(self.base.folders)

    @classmethod
    def start(cls, defaults: Defaults, stale: Iterable[str] = (), hierarchy: Hierarchy | None = None) -> Slots:
        """Find the controllers (`hierarchy`: what `detect()` finds), remove an earlier run's
        slots, make this run's folder. Prints one line per missing piece, or what is enforced;
        never raises for want of cgroups."""
        left = remove_now(stale)
        hierarchy = hierarchy or detect()
        slots = cls(hierarchy, defaults)
        slots.problems = missing_lines(hierarchy)
        if left:
            slots.problems.append(f"limits: could not remove {len(left)} cgroup(s) an earlier server left "
                                  f"({', '.join(left[:3])}); remove them with rmdir once their processes are gone")
        if hierarchy.folders:
            base = base_of(hierarchy, f"wisp-{os.getpid()}")
            try:
                run_steps(setup_plan(hierarchy, base, os.getpid(), machine_cores()))
            except OSError as exc:
                advice = ("its cgroup holds other processes, so it cannot hand its controllers on: run the server "
                          "in a cgroup of its own (a systemd service, or systemd-run --scope -p Delegate=yes)"
                          if exc.errno == errno.EBUSY else "run the server as root, or in a cgroup delegated to its user")
                slots.problems.append(
                    f"limits: cannot create cgroups in {exc.filename or next(iter(base.folders.values()))} "
                    f"({exc.strerror}): containers run without memory, pids and CPU limits; {advice}")
                remove_now(set(base.folders.values()), 0)  # what the plan made before it failed
            else:
                slots.base = base
        # What the next start removes: this run's folder, and what could not be removed now.
        groups.set_cgroups([*left, *sorted(set(slots.base.folders.values()))])
        for line in slots.problems:
            print(f"wisp server: {line}", flush=True)
        if slots.available:
            print(f"wisp server: limits: cgroup v{hierarchy.version} ({', '.join(base.folders)}): a container gets at "
                  f"most max(memory=, {defaults.memory_limit_mb} MiB) of memory, {defaults.pids} pids and "
                  f"max(cpu=, {defaults.cpu_ceiling:g}) cores, unless its function sets limits", flush=True)
        return slots

    def supply(self, limits: Limits, user: AppUser | None) -> SlotSupply:
        return SlotSupply(self if self.available else None, limits, user)

    def make(self, limits: Limits, user: AppUser | None, kind: str = "c") -> Slot:
        """A new slot, joinable by the app's uid (`kind` "z": a function zygote, which joins as root)."""
        owner = (user.uid, user.gid) if user is not None else None
        if self.base.version == 2 and (user.uid if user else None) not in self._apps:
            run_steps(app_plan(self.base, owner))
            self._apps.add(user.uid if user else None)
        plan = slot_plan(self.base, f"{kind}{next(self._names)}", limits, owner)
        try:
            run_steps(plan.steps)
        except OSError:
            remove_now(reversed(plan.folders), 0)
            raise
        slot = Slot(plan, limits, self)
        self._live.add(slot)
        return slot

    def remove(self, slot: Slot) -> None:
        """Remove a slot now, or in the background while its killed processes exit."""
        self._live.discard(slot)
        if all([remove_folder(f) for f in reversed(slot.plan.folders)]):
            self._removing.pop(slot, None)
            return
        tries = self._removing.get(slot, REMOVE_TRIES) - 1
        if tries <= 0:
            self._removing.pop(slot, None)  # the next start removes it (the run record names the folder)
            return
        self._removing[slot] = tries
        with contextlib.suppress(RuntimeError):  # no loop: close() removes it
            asyncio.get_running_loop().call_later(REMOVE_EVERY, self.remove, slot)

    def close(self) -> None:
        """At server stop: every slot and the server's folder go (what is still busy, the next
        start removes)."""
        folders = [f for slot in [*self._live, *self._removing] for f in reversed(slot.plan.folders)]
        self._live.clear()
        self._removing.clear()
        left = remove_now([*folders, *self.base.folders.values()])
        if not left:
            groups.set_cgroups([])


class SlotSupply:
    """The slots of one function's containers: one made ahead, handed out by `take()`, the next
    made soon after, off the start's path. Without cgroups (`slots` None) it hands out None."""

    def __init__(self, slots: Slots | None, limits: Limits, user: AppUser | None) -> None:
        self.slots = slots
        self.limits = limits
        self.user = user
        self._spare: Slot | None = None
        self._closed = False
        self._failed: str | None = None

    def prepare(self) -> None:
        """Make the first slot ahead of the first start."""
        if self._spare is None:
            self._spare = self._make()

    def _make(self, kind: str = "c") -> Slot | None:
        if self.slots is None or (self._closed and kind == "c"):
            return None
        try:
            return self.slots.make(self.limits, self.user, kind)
        except OSError as exc:
            problem = f"limits: could not make a cgroup slot ({exc.filename}: {exc.strerror})"
            if problem != self._failed:
                print(f"wisp server: {problem}; the container starts without its limits", flush=True)
                self._failed = problem
            return None

    def take(self) -> Slot | None:
        """A slot for the next container (None without cgroups); the next one is made soon after."""
        slot, self._spare = self._spare, None
        if slot is None:
            slot = self._make()
        if self.slots is not None and not self._closed:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(self.prepare)
        return slot

    def for_zygote(self) -> Slot | None:
        """A slot for a function zygote (it imports the script: user code, under the same limits)."""
        return self._make("z")

    def close(self) -> None:
        self._closed = True
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.done()


def detect() -> Hierarchy:
    """This process's cgroups, as `find_hierarchy` reads them from /proc."""
    mountinfo, own = _read("/proc/self/mountinfo"), _read("/proc/self/cgroup")
    hierarchy = find_hierarchy(mountinfo, own)
    if hierarchy.version == 0:
        v2 = find_hierarchy(mountinfo, own, "memory pids cpu")  # where a v2 folder would be, if any
        if v2.version == 2:
            folder = next(iter(v2.folders.values()))
            hierarchy = find_hierarchy(mountinfo, own, _read(os.path.join(folder, "cgroup.controllers")))
    return hierarchy


def unavailable(defaults: Defaults | None = None) -> Slots:
    """Slots that hand out none (tests and runtimes that place elsewhere)."""
    return Slots(Hierarchy(0, {}, {}), defaults or Defaults())


__all__ = ["Slot", "SlotSupply", "Slots", "detect", "kill_all", "remove_folder", "remove_now", "run_steps",
           "unavailable"]

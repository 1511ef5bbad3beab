"""The process groups a server started, recorded under `$WISP_HOME/run/`, so that the next start
of the same home ends whatever outlived this run.

Parent-death signals (`wisp._runtime._parent`) should leave nothing behind a dead server; this
is the net under them: for a process a container started itself (it stays in the container's
group, and no zygote is left to end that group when the container was a fresh process), and for
anything started by a server whose code predates them. Each group is recorded by its leader's
pid and start time (field 22 of /proc/<pid>/stat), so a pid reused by another program is never
signalled: a live leader must have the recorded start time, and while any member of a group is
alive the kernel gives its number to no new process.

`run/run.json` holds the epoch (one more each start), the server's pid and start time and the
folders to remove (socket folders under /tmp) and its cgroup folders (`slots`: the next start
removes them, killing what is left in them); `run/groups-<epoch>` one `pid start` line per
group started. Writing is best effort: a full disk costs the record, never a container.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

RUN_DIR = "run"
RUN_FILE = "run.json"
COMPACT_AFTER = 256  # lines written beyond twice the live groups before the file is rewritten


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (/proc/<pid>/stat field 22); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()  # the command name, in parentheses, may hold spaces
    return int(fields[19])  # fields[0] is field 3 (state)


class RunRecord:
    """This run's groups, appended as they start and rewritten now and then without the ended."""

    def __init__(self, folder: Path, epoch: int, folders: list[str]) -> None:
        self.folder = folder
        self.epoch = epoch
        self.folders = list(folders)
        self.cgroups: list[str] = []  # this run's cgroup folders (slots.Slots)
        self.stale_cgroups: list[str] = []  # an earlier run's, for Slots.start to remove
        self.path = folder / f"groups-{epoch}"
        self.live: dict[int, int] = {}  # leader pid -> start time
        self._written = 0
        self._failed = False

    def launched(self, pid: int) -> None:
        started = start_time(pid)
        if started is None:  # already gone (and reaped): its number may be anybody's now
            return
        self.live[pid] = started
        self._written += 1
        if self._written > 2 * len(self.live) + COMPACT_AFTER:
            self._rewrite()
        else:
            self._write(f"{pid} {started}\n", "a")

    def ended(self, pid: int) -> None:
        self.live.pop(pid, None)

    def add_folder(self, path: str) -> None:
        """One more folder for the next start to remove if this run cannot."""
        self.folders.append(path)
        self.save()

    def save(self) -> None:
        me = os.getpid()
        info = {"epoch": self.epoch, "pid": me, "start_time": start_time(me), "folders": self.folders,
                "cgroups": [*self.stale_cgroups, *self.cgroups]}
        tmp = self.folder / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(self.folder / RUN_FILE)

    def _rewrite(self) -> None:
        self._written = len(self.live)
        self._write("".join(f"{pid} {started}\n" for pid, started in self.live.items()), "w")

    def _write(self, text: str, mode: str) -> None:
        try:
            with self.path.open(mode) as f:
                f.write(text)
        except OSError as exc:
            if not self._failed:
                print(f"wisp server: cannot record started processes in {self.path} ({exc}); "
                      "a later start may not find them if this server is killed", file=sys.stderr, flush=True)
            self._failed = True
        else:
            self._failed = False


def reap(folder: Path) -> tuple[int, list[str], list[str]]:
    """End the groups recorded by earlier runs in `folder` and remove their record files; the
    number of groups signalled, the folders those runs asked to have removed and their cgroup folders."""
    ended = 0
    for path in folder.glob("groups-*"):
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    pid, started = (int(part) for part in line.split())
                    ended += _end_group(pid, started)
            path.unlink()
    folders: list[str] = []
    cgroups: list[str] = []
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        info = json.loads((folder / RUN_FILE).read_text())
        folders = [str(f) for f in info.get("folders", [])]
        cgroups = [str(f) for f in info.get("cgroups", []) if str(f).startswith("/sys/fs/cgroup/")]
    return ended, folders, cgroups


def _end_group(pid: int, started: int) -> int:
    now = start_time(pid)
    if now is not None and now != started:
        return 0  # the leader's pid belongs to another process now, and so does the group
    try:
        os.killpg(pid, signal.SIGKILL)  # a dead leader's group: its number is still the group's
    except (ProcessLookupError, PermissionError):
        return 0
    return 1


def begin(home: Path, folders: list[str]) -> RunRecord:
    """At server start (holding the alive lock, so no other server of `home` runs): end what an
    earlier run left, remove its folders, and start this run's record."""
    folder = home / RUN_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    ended, old_folders, old_cgroups = reap(folder)
    if ended:
        print(f"wisp server: ended {ended} process group(s) left running by an earlier server of {home}",
              file=sys.stderr, flush=True)
    for old in old_folders:
        if Path(old).name.startswith("wisp-"):  # only wisp's own socket folders
            shutil.rmtree(old, ignore_errors=True)
    epoch = 1
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        epoch = int(json.loads((folder / RUN_FILE).read_text()).get("epoch", 0)) + 1
    record = RunRecord(folder, epoch, folders)
    record.stale_cgroups = old_cgroups  # kept in the record until Slots.start has removed them
    record.save()
    return record


current: RunRecord | None = None  # set by the server at start; runtimes record into it


def launched(pid: int) -> None:
    if current is not None:
        current.launched(pid)


def ended(pid: int) -> None:
    if current is not None:
        current.ended(pid)


def set_cgroups(paths: list[str]) -> None:
    """This run's cgroup folders (the earlier runs' are removed by now)."""
    if current is not None:
        current.stale_cgroups = []
        current.cgroups = list(paths)
        with contextlib.suppress(OSError):
            current.save()


def stale_cgroups() -> list[str]:
    return list(current.stale_cgroups) if current is not None else []


def add_folder(path: str) -> None:
    if current is not None:
        with contextlib.suppress(OSError):
            current.add_folder(path)

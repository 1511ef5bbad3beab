"""The run record: groups are ended by pid and start time, never a reused pid's new owner."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from wisp.server.runtime import groups


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_start_time_is_field_22_and_none_once_gone() -> None:
    proc = _sleeper()
    started = groups.start_time(proc.pid)
    assert isinstance(started, int) and started >= groups.start_time(os.getpid())  # type: ignore[operator]
    proc.kill()
    proc.wait()
    assert groups.start_time(proc.pid) is None


def test_the_next_run_ends_recorded_groups_and_spares_strangers(tmp_path: Path) -> None:
    recorded, stranger = _sleeper(), _sleeper()
    try:
        first = groups.begin(tmp_path, ["/nonexistent/wisp-old"])
        first.launched(recorded.pid)
        first.launched(stranger.pid)
        # the stranger's pid "was reused": the record holds a start time it does not have
        lines = [line for line in first.path.read_text().splitlines() if not line.startswith(f"{stranger.pid} ")]
        first.path.write_text("\n".join([*lines, f"{stranger.pid} 1", "garbage line"]) + "\n")
        second = groups.begin(tmp_path, [])
        assert recorded.wait(5) == -9
        assert stranger.poll() is None
        assert second.epoch == first.epoch + 1
        assert not first.path.exists()
    finally:
        for proc in (recorded, stranger):
            proc.kill()
            proc.wait()


def test_the_record_is_rewritten_without_ended_groups(tmp_path: Path) -> None:
    record = groups.begin(tmp_path, [])
    me = os.getpid()
    for _ in range(groups.COMPACT_AFTER + 10):
        record.launched(me)
        record.ended(me)
    assert len(record.path.read_text().splitlines()) < groups.COMPACT_AFTER


def test_the_next_run_is_handed_the_cgroup_folders_of_the_last(tmp_path: Path) -> None:
    """What `slots.Slots.start` removes: the earlier run's recorded cgroup folders, and only
    paths under /sys/fs/cgroup (a record is never a way to rmdir anything else)."""
    saved = groups.current
    try:
        groups.current = first = groups.begin(tmp_path, [])
        groups.set_cgroups(["/sys/fs/cgroup/memory/wisp-1", "/etc/not-a-cgroup"])
        groups.current = second = groups.begin(tmp_path, [])
        assert second.stale_cgroups == ["/sys/fs/cgroup/memory/wisp-1"] == groups.stale_cgroups()
        assert first.epoch + 1 == second.epoch
        groups.set_cgroups(["/sys/fs/cgroup/memory/wisp-2"])  # the stale ones removed, this run's recorded
        assert groups.begin(tmp_path, []).stale_cgroups == ["/sys/fs/cgroup/memory/wisp-2"]
    finally:
        groups.current = saved

"""The child's first step (`wisp._runtime.cgroup.join`), in a real forked child: "0" (itself) goes
to each file, and a child that cannot join says why on its output and exits instead of running
without its limits. Regular files stand in for `tasks` / `cgroup.procs` (the write is the same);
tests/faults/test_limits.py joins real cgroups."""
from __future__ import annotations

import os
from pathlib import Path

from wisp._runtime.cgroup import JOIN_FAILED, join


def _in_child(procs: list[str] | None) -> tuple[int, int, str]:
    """Fork, join, exit 0; (the child's pid, its exit code, what it wrote to its output)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        join(procs, write)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as output:
        said = output.read()
    return pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), said


def test_the_child_writes_itself_to_every_slot_file(tmp_path: Path) -> None:
    files = [tmp_path / "memory.tasks", tmp_path / "pids.tasks"]
    for f in files:
        f.write_text("")
    _, code, said = _in_child([str(f) for f in files])
    assert (code, said) == (0, "")
    assert [f.read_text() for f in files] == ["0", "0"]


def test_no_slot_no_write() -> None:
    assert _in_child(None)[1:] == (0, "") and _in_child([])[1:] == (0, "")


def test_a_child_that_cannot_join_never_runs(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "cgroup.procs"
    _, code, said = _in_child([str(missing)])
    assert code == JOIN_FAILED
    assert said.startswith(f"[wisp] could not join the container's cgroup ({missing}: No such file or directory); "
                           "it does not run without its limits.")

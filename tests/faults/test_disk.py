"""A full disk degrades, it does not wedge (issue 11, point 5): with `$WISP_HOME` on a small tmpfs
that fills up, requests are still answered, the log drops lines and says so once, logging
resumes once there is room, and `server stop` finishes; a start on a full disk fails with a
clear message and leaves nothing running; a log is capped and rotated, with a marker."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from e2e.conftest import Wisp, get, start_wisp, wait_until

from .conftest import leftovers

APPS = Path(__file__).parent / "apps"
DISK = "32m"  # state.db, logs and the apps' code; images live outside it (a symlink)


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    """A WISP_HOME on a tmpfs of its own; its `images/` is a link to the real disk (venvs are big)."""
    home = tmp_path / "home"
    home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "wisp-faults", str(home)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for WISP_HOME (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        (tmp_path / "images").mkdir()
        (home / "images").symlink_to(tmp_path / "images")
        yield home
    finally:
        for line in leftovers(home):
            with contextlib_suppress():
                os.kill(int(line.split()[0]), 9)
        if subprocess.run(["umount", str(home)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(home)], capture_output=True)


class contextlib_suppress:
    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: object, *_: object) -> bool:
        return kind is not None and issubclass(kind, OSError)  # type: ignore[arg-type]


def fill(home: Path) -> Path:
    """Fill the disk of `home` to the last byte; the file that does it (remove it to free the space)."""
    filler = home / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def _deploy(wisp: Wisp, tmp_path: Path, name: str) -> None:
    shutil.copy(APPS / name, tmp_path / name)
    wisp.run("deploy", str(tmp_path / name))


def _talk(wisp: Wisp, counts: Counter[str], say: str, lines: int = 0) -> None:
    counts["sent"] += 1
    try:
        response = get(wisp.url("chatty--talk", f"/?say={say}&lines={lines}"), timeout=30)
    except requests.RequestException:
        counts["lost"] += 1
        return
    counts["answered" if response.status_code == 200 and response.json() == {"said": say} else "lost"] += 1


def test_a_full_disk_drops_log_lines_keeps_serving_and_logging_resumes(small_home: Path, tmp_path: Path) -> None:
    wisp = start_wisp(small_home)
    counts: Counter[str] = Counter()
    stopped = None
    try:
        _deploy(wisp, tmp_path, "chatty_app.py")
        for i in range(5):
            _talk(wisp, counts, f"before-{i}")
        log = small_home / "logs" / "chatty.log"
        wait_until(lambda: "said before-4" in log.read_text(), 30, message="the log to have the first requests")

        filler = fill(small_home)
        for i in range(30):
            _talk(wisp, counts, f"full-{i}", lines=50)  # each write of these fails
        full = Counter(counts)
        filler.unlink()
        for i in range(5):
            _talk(wisp, counts, f"after-{i}")
        wait_until(lambda: "said after-4" in log.read_text(), 30, message="logging to resume once there is room")
        text = log.read_text()
        server_log = (small_home / "server.log").read_text()
        print(f"\nfull disk while serving: requests {dict(counts)} ({full['lost']} lost while full); "
              f"drop markers in the app log: {text.count('log line(s) were dropped')}; "
              f"server log notes: {server_log.count('cannot write')}")
        assert counts["answered"] == counts["sent"] == 40, counts
        assert text.count("log line(s) were dropped") == 1, text[-3000:]
        assert server_log.count(f"cannot write {log}") == 1, server_log[-3000:]

        fill(small_home)  # and stop on a full disk: it must still finish
        started = time.monotonic()
        stopped = wisp.run("server", "stop", check=False, timeout=120)
        took = time.monotonic() - started
        left = leftovers(small_home)
        print(f"server stop on a full disk: exit {stopped.returncode} in {took:.1f} s; {len(left)} processes left")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not left, "\n".join(left)
    finally:
        if stopped is None:
            (small_home / "filler").unlink(missing_ok=True)
            wisp.run("server", "stop", check=False, timeout=120)


def test_a_start_on_a_full_disk_fails_clearly_and_leaves_nothing_running(small_home: Path, tmp_path: Path) -> None:
    wisp = start_wisp(small_home)
    try:
        _deploy(wisp, tmp_path, "procs_app.py")  # zygotes and warm containers, restored at each start
        wisp.run("server", "stop")
        fill(small_home)
        failed = wisp.run("server", "start", check=False, timeout=120)
        time.sleep(1.0)  # what a failed start might have left would be running now
        left = leftovers(small_home)
        said = failed.stdout + failed.stderr
        print(f"\nstart on a full disk: exit {failed.returncode}; {len(left)} processes left; said: {said.strip()!r}")
        assert failed.returncode != 0
        assert str(small_home) in said and "full" in said and "KiB" in said, said
        assert "Traceback" not in said, said
        assert not left, "\n".join(left)
    finally:
        (small_home / "filler").unlink(missing_ok=True)
        wisp.run("server", "stop", check=False)


def test_a_50_mb_import_output_is_rotated_with_a_marker(tmp_path: Path) -> None:
    cap = 8_000_000
    wisp = start_wisp(tmp_path / "home", {"WISP_LOG_MAX_BYTES": str(cap)})
    try:
        _deploy(wisp, tmp_path, "noisy_app.py")
        assert get(wisp.url("noisy--hello", "/?say=done")).status_code == 200
        log = wisp.home / "logs" / "noisy.log"
        wait_until(lambda: "said done" in log.read_text(), 120, message="the request's line in the log")
        files = sorted(p.name for p in (wisp.home / "logs").iterdir())
        sizes = {p.name: p.stat().st_size for p in (wisp.home / "logs").iterdir()}
        text = log.read_text()
        print(f"\n50 MB of import output, WISP_LOG_MAX_BYTES={cap}: files {sizes}")
        assert files == ["noisy.log", "noisy.log.1"], files
        assert all(size <= cap for size in sizes.values()), sizes
        assert "[wisp] log rotated" in text.splitlines()[0], text[:500]
        assert "noise done" in text or "noise done" in (wisp.home / "logs" / "noisy.log.1").read_text()
        shown = wisp.run("app", "logs", "noisy").stdout
        assert "rotated away" in shown and "said done" in shown
    finally:
        wisp.run("server", "stop", check=False)

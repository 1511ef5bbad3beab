"""AppLog: a failed write drops lines and says so, never raises; size cap, rotation, markers,
offsets that go on across a rotation."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from wisp.server import logs
from wisp.server.logs import MAX_LINE, AppLog


def test_lines_are_appended_and_read_from_an_offset(tmp_path: Path) -> None:
    log = AppLog(tmp_path / "a.log", max_bytes=1 << 20)
    log.write("one", source="fn c1")
    text, offset = log.read()
    assert text.endswith("[fn c1] one\n")
    log.write("two")
    more, end = log.read(offset)
    assert more.endswith(" two\n") and "one" not in more and end == offset + len(more.encode())


def test_a_full_file_is_rotated_with_a_marker_and_offsets_go_on(tmp_path: Path) -> None:
    log = AppLog(tmp_path / "a.log", max_bytes=logs.MIN_MAX_BYTES)
    line = "x" * 1000
    _, start = log.read()
    for i in range(600):  # ~600 KB: rotated more than once
        log.write(f"{i} {line}")
    assert (tmp_path / "a.log.1").exists() and not (tmp_path / "a.log.2").exists()
    assert all(p.stat().st_size <= logs.MIN_MAX_BYTES for p in tmp_path.iterdir())
    current = (tmp_path / "a.log").read_text()
    assert current.splitlines()[0].endswith("the lines before are in a.log.1, older ones were removed")
    everything, end = log.read(start)
    assert everything.startswith("[wisp] ") and "rotated away" in everything.splitlines()[0]
    assert everything.rstrip().endswith(f"599 {line}")
    log.write("after")
    tail, _ = log.read(end)
    assert tail.endswith(" after\n") and line not in tail


def test_a_long_line_is_cut_with_a_marker(tmp_path: Path) -> None:
    log = AppLog(tmp_path / "a.log", max_bytes=1 << 20)
    log.write("z" * (MAX_LINE * 2))
    text, _ = log.read()
    assert len(text) < MAX_LINE + 200 and "[wisp: line cut here," in text and text.endswith("not logged]\n")


def test_a_failed_write_drops_the_line_says_so_once_and_logging_resumes(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    log = AppLog(tmp_path / "a.log", max_bytes=1 << 20)
    real_write = os.write
    full = True

    def write(fd: int, data: bytes) -> int:
        if full and fd == log._fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(logs.os, "write", write)
    for i in range(5):
        log.write(f"lost {i}")  # never raises
    assert capsys.readouterr().err.count("cannot write") == 1
    full = False
    log.write("back")
    text, _ = log.read()
    assert "lost" not in text.replace("5 log line(s) were dropped", "")
    assert "5 log line(s) were dropped: No space left on device" in text and text.endswith(" back\n")
    assert "writing" in capsys.readouterr().err


def test_a_write_cut_short_ends_its_line_before_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AppLog(tmp_path / "a.log", max_bytes=1 << 20)
    real_write = os.write
    calls = []

    def write(fd: int, data: bytes) -> int:
        calls.append(data)
        if len(calls) == 1:
            return real_write(fd, data[:10])  # the disk had room for 10 bytes
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(logs.os, "write", write)
    log.write("a line that does not fit")
    log.write("next")
    lines = log.read()[0].splitlines()
    assert lines[0].endswith("[wisp: line cut here: the log could not be written]")
    assert "1 log line(s) were dropped" in lines[1] and lines[2].endswith(" next")


def test_the_servers_output_keeps_what_it_could_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "server.log"
    with path.open("w") as raw:
        stream = logs.UnfailingStream(raw)  # type: ignore[arg-type]
        real_write = os.write
        full = True

        def write(fd: int, data: bytes) -> int:
            if full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(logs.os, "write", write)
        stream.write("the note about the full disk\n")  # never raises
        full = False
        stream.write("later\n")
    assert path.read_text() == "the note about the full disk\nlater\n"


@pytest.mark.parametrize("value", ["abc", "-1", "0", "1.5"])
def test_a_bad_log_size_stops_the_server_with_its_name(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WISP_LOG_MAX_BYTES", value)
    with pytest.raises(SystemExit, match="WISP_LOG_MAX_BYTES"):
        logs.check_log_max_bytes()

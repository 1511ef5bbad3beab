"""Per-app log files: what containers write, and the server's own lines about them.

A log never stops what writes to it: a line that cannot be written (a full disk) is dropped,
the server log says so once, and the app's log says how many were lost when writing works
again. Each file is capped at `WISP_LOG_MAX_BYTES` and then rotated to `<app>.log.1` (one
rotated file is kept); the new file starts with a line saying so. A line longer than
`MAX_LINE` is cut, with a marker.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from pathlib import Path

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # per file; with the rotated one, at most twice this per app
MAX_LINE = 64 * 1024  # bytes of one line kept; the rest is replaced by a marker
MIN_MAX_BYTES = 4 * MAX_LINE


def log_max_bytes() -> int:
    """WISP_LOG_MAX_BYTES, checked by the server at start (`check_log_max_bytes`)."""
    value = os.environ.get("WISP_LOG_MAX_BYTES")
    return max(int(value), MIN_MAX_BYTES) if value else DEFAULT_MAX_BYTES


def check_log_max_bytes() -> None:
    value = os.environ.get("WISP_LOG_MAX_BYTES")
    if value and not (value.isdigit() and int(value) > 0):
        raise SystemExit(f"wisp server: WISP_LOG_MAX_BYTES={value!r} must be a number of bytes (a log file's size "
                         f"before it is rotated; default {DEFAULT_MAX_BYTES}).")


def note(message: str) -> None:
    """A line in the server's own log (its stderr: an `UnfailingStream` keeps it until it can be
    written); never raises."""
    with contextlib.suppress(OSError, ValueError):
        print(f"wisp server: {message}", file=sys.stderr, flush=True)


class AppLog:
    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else log_max_bytes()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._size = os.fstat(self._fd).st_size
        self._base = 0  # bytes of this log before the current file (rotated): offsets go on from there
        self._dropped = 0  # lines lost since writing last failed
        self._failure: str | None = None
        self._torn = False  # the last line written was cut short: the next write starts a new line

    def write(self, line: str, *, source: str | None = None) -> None:
        """Append a line; never raises (a log must not stop what feeds it)."""
        stamp = time.strftime("%H:%M:%S")
        prefix = f"{stamp} [{source}] " if source else f"{stamp} "
        data = (prefix + line).encode(errors="replace")
        if len(data) > MAX_LINE:
            cut = len(data) - MAX_LINE
            data = data[:MAX_LINE] + f" [wisp: line cut here, {cut} more bytes not logged]".encode()
        self._append(data + b"\n")

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            return
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self._rotate()
        if self._failure is not None:
            resumed = f"{time.strftime('%H:%M:%S')} [wisp] {self._dropped} log line(s) were dropped: {self._failure}\n"
            data = resumed.encode() + data
        if self._torn:
            data = b" [wisp: line cut here: the log could not be written]\n" + data
        written = self._write_all(data)
        if written == len(data):
            if self._failure is not None:
                note(f"writing {self.path} again ({self._dropped} line(s) were dropped)")
            self._failure, self._dropped, self._torn = None, 0, False
        else:
            self._torn = self._torn or written > 0  # part of a line made it: end it, next time
            self._dropped += 1

    def _write_all(self, data: bytes) -> int:
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            if self._failure is None:
                self._failure = f"{exc.strerror or exc} while writing {self.path}"
                note(f"cannot write {self.path} ({exc.strerror or exc}); dropping its lines until it can be written")
        finally:
            self._size += written
        return written

    def _rotate(self) -> None:
        """Keep this file as `<name>.1` (replacing the one before) and start a new one that says so."""
        rotated = self.path.with_name(self.path.name + ".1")
        try:
            os.replace(self.path, rotated)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            if self._failure is None:
                self._failure = f"{exc.strerror or exc} while rotating {self.path}"
                note(f"cannot rotate {self.path} ({exc.strerror or exc})")
            return
        os.close(self._fd)
        self._fd = fd
        self._base += self._size
        self._size = 0
        self._torn = False  # the cut line ended with the old file
        marker = (f"{time.strftime('%H:%M:%S')} [wisp] log rotated: it reached {self.max_bytes} bytes "
                  f"(WISP_LOG_MAX_BYTES); the lines before are in {rotated.name}, older ones were removed\n")
        self._write_all(marker.encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self, offset: int = 0) -> tuple[str, int]:
        """Text from `offset` on, and the offset to continue from. Offsets count every byte this
        log has had since the server started, so a reader that follows it goes on across a
        rotation; one from before the rotated file gets what is left, after a marker."""
        rotated = self.path.with_name(self.path.name + ".1")
        parts = []
        if offset < self._base:
            older = _read_from(rotated, 0)
            start = self._base - len(older)
            if offset < start:
                parts.append(f"[wisp] {start - offset} bytes of this log were rotated away\n".encode())
            parts.append(older[max(offset - start, 0):])
            offset = self._base
        current = _read_from(self.path, offset - self._base)
        parts.append(current)
        return b"".join(parts).decode(errors="replace"), offset + len(current)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


class UnfailingStream(io.TextIOBase):
    """The server's stdout and stderr (`server.log`): a write that fails, on a full disk, is kept
    (the first KEEP_UNWRITTEN bytes; the rest are only counted) instead of raised into whatever
    printed, and written before the next write that works, so the note about the full disk
    reaches the server log once there is room."""

    KEEP_UNWRITTEN = 16 * 1024

    def __init__(self, stream: io.TextIOBase) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._unwritten = b""
        self._dropped = 0  # writes that did not fit in _unwritten

    @property
    def encoding(self) -> str:  # type: ignore[override]  # typeshed: a plain attribute; read-only here
        return "utf-8"

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return self._stream.isatty()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = self._unwritten + text.encode(errors="replace")
        written = self._write(data)
        if written < len(data):
            rest = data[written:]
            self._unwritten = rest[:self.KEEP_UNWRITTEN]
            self._dropped += len(rest) > self.KEEP_UNWRITTEN
            return len(text)
        self._unwritten = b""
        if self._dropped:
            self._write(f"[wisp] {self._dropped} more write(s) of server output were dropped (disk full?)\n".encode())
            self._dropped = 0
        return len(text)

    def _write(self, data: bytes) -> int:
        written = 0
        with contextlib.suppress(OSError):
            while written < len(data):
                written += os.write(self._fd, data[written:])
        return written

    def flush(self) -> None:
        pass

"""Where wisp keeps its state, and how the CLI finds the running server."""
from __future__ import annotations

import errno
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8400
SERVER_FILE = "server.json"  # written by a running server: pid, ports; removed when it stops
TOKEN_FILE = "token"  # control-plane credential, mode 0600
ALIVE_LOCK = "server.alive"  # flock held by a server process from its start to its exit
START_LOCK = "server.start"  # flock held by a CLI while it finds or starts the server
INSECURE_ENV = "WISP_INSECURE"  # "1": the server may listen off loopback over plain HTTP (--insecure)
MIN_FREE_BYTES = 1 << 20  # to start a server: the token, server.json, the database's journal, log lines


def wisp_home() -> Path:
    home = Path(os.environ.get("WISP_HOME") or Path.home() / ".wisp").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_port() -> int:
    return int(os.environ.get("WISP_PORT") or DEFAULT_PORT)


def disk_full_message(home: Path) -> str:
    try:
        stat = os.statvfs(home)
        free = f"{stat.f_bavail * stat.f_frsize // 1024} KiB free"
    except OSError:
        free = "no space left"
    return (f"The disk of WISP_HOME ({home}) is full: {free}, and a wisp server needs at least "
            f"{MIN_FREE_BYTES // 1024} KiB there to start. Free some space (app logs are in {home / 'logs'}, "
            "`wisp image prune` removes unused images), or set WISP_HOME to a folder on another disk.")


def disk_problem(home: Path) -> str | None:
    """Why a server cannot start in `home` for want of space, or None."""
    try:
        stat = os.statvfs(home)
    except OSError:
        return None
    return disk_full_message(home) if stat.f_bavail * stat.f_frsize < MIN_FREE_BYTES else None


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk or quota, or SQLite's "database or disk is full"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc)


def _write_atomically(path: Path, text: str, mode: int) -> None:
    """All of `text` or nothing at `path` (a full disk leaves the old file, or none)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)  # a leftover .tmp keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path, text: str) -> None:
    """A file only the server's user may read (mode 0600), written whole or not at all."""
    _write_atomically(path, text, 0o600)


def read_token(home: Path, *, create: bool = False) -> str | None:
    path = home / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token or not create:  # an empty file is what an older wisp left on a full disk
            return token
    if not create:
        return None
    token = secrets.token_urlsafe(32)
    _write_atomically(path, token, 0o600)
    return token


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    gateway_port: int
    admin_port: int
    modal_port: int = 0  # Modal's client API (issue 13); 0: off
    store: str = "sqlite"  # the store's kind: "sqlite" (state.db) or "postgresql" (--store)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


def read_server_info(home: Path) -> ServerInfo | None:
    try:
        data = json.loads((home / SERVER_FILE).read_text())
        return ServerInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_server_info(home: Path, info: ServerInfo) -> None:
    _write_atomically(home / SERVER_FILE, json.dumps(info.__dict__), 0o600)  # the server's alone, like the token

"""Where wisp keeps its state, and how the CLI finds the running server."""
from __future__ import annotations

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


def wisp_home() -> Path:
    home = Path(os.environ.get("WISP_HOME") or Path.home() / ".wisp").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_port() -> int:
    return int(os.environ.get("WISP_PORT") or DEFAULT_PORT)


def read_token(home: Path, *, create: bool = False) -> str | None:
    path = home / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    gateway_port: int
    admin_port: int

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
    tmp = home / (SERVER_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the server's alone, like the token
    os.fchmod(fd, 0o600)  # a leftover .tmp keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info.__dict__))
    tmp.replace(home / SERVER_FILE)

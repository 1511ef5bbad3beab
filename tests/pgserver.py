"""A throwaway Postgres server for the tests: Debian's binaries, a temporary cluster listening on
127.0.0.1 (a free port) and a socket folder of its own, stopped at the end. Postgres refuses to
run as root, so a root test run starts it as `nobody`."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

INSTALL = ("Postgres's server binaries are missing (no /usr/lib/postgresql/<version>/bin/initdb): run "
           "scripts/install as root (it installs Debian's `postgresql` package), or "
           "`apt-get install postgresql`")


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.fail(INSTALL)
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="wisp-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.port = _free_port()
        self.user = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            for path in (self.root, self.sockets):
                shutil.chown(path, self.user, "nogroup")
        # Its folders are the owner's alone: a container (another uid) must not reach the socket.
        os.chmod(self.root, 0o700)
        os.chmod(self.sockets, 0o700)

    def _as_owner(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *argv] if os.geteuid() == 0 else list(argv)

    def start(self) -> None:
        subprocess.run(self._as_owner(str(self.bin / "initdb"), "-D", str(self.data), "-U", "wisp", "-A", "trust",
                                      "-E", "UTF8", "--locale", "C.UTF-8", "--no-sync"),
                       check=True, capture_output=True, text=True, timeout=120)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c unix_socket_permissions=0700 -c fsync=off"
        started = subprocess.run(self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                                                "-l", str(self.root / "log"), "-w", "-t", "60", "start"),
                                 capture_output=True, text=True, timeout=90)
        if started.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise AssertionError(f"pg_ctl start failed:\n{started.stdout}{started.stderr}\n{log}")

    def stop(self) -> None:
        subprocess.run(self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://wisp@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on this server: its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        subprocess.run([str(self.bin / "psql"), "-q", "-v", "ON_ERROR_STOP=1", self.url(), "-c",
                        f"CREATE DATABASE {name}"], check=True, capture_output=True, timeout=60)
        return self.url(name)

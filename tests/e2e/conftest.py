"""End-to-end fixtures: a real wisp server on a free port, real `wisp` CLI processes, real HTTP."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from wisp.client import server_alive

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
WISP = [sys.executable, "-m", "wisp.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Wisp:
    """One WISP_HOME with its server; runs CLI commands against it."""

    def __init__(self, home: Path, port: int, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = port
        self.env = {**os.environ, "WISP_HOME": str(home), "WISP_PORT": str(port), "PYTHONUNBUFFERED": "1",
                    **(extra_env or {})}

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*WISP, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"wisp {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def url(self, label: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}/{label}{path}"

    def server_pid(self) -> int:
        return json.loads((self.home / "server.json").read_text())["pid"]

    def runtime(self) -> str:
        """The runtime the server runs (what `auto` chose), as `wisp server status` names it."""
        return self.run("server", "status").stdout.split(", runtime ", 1)[1].split(",")[0]

    def serve(self, script: Path | str, *extra: str) -> ServeProcess:
        return ServeProcess(self, [*WISP, "serve", str(script), *extra])


class ServeProcess:
    """A running `wisp serve`; its output is collected in the background."""

    def __init__(self, wisp: Wisp, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, env=wisp.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120, start: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in "".join(self.lines[start:]):
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                if text in "".join(self.lines[start:]):
                    return
                raise AssertionError(f"wisp serve exited {self.proc.returncode} before printing {text!r}:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"wisp serve did not print {text!r} in {timeout} s:\n{self.output}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # leave nothing running, but still fail the test
            self.proc.wait()
            raise
        self._reader.join(5)
        if self.proc.stdout is not None and not self._reader.is_alive():  # never close it under the reader
            self.proc.stdout.close()
        return code

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_OPEN_HOMES: list[Path] = []


def open_for_containers(home: Path) -> None:
    """A root server gives each app a uid, which must pass through the folders above WISP_HOME to
    reach its code. pytest keeps its folders 0700 (and every pytest session that starts resets
    that), so a root test's home lives in a folder of its own that others may enter (never list),
    and `home` links to it; the server (and /proc) name the real path."""
    if os.geteuid() != 0 or home.is_symlink():
        return
    if home.exists():
        if any(home.iterdir()):
            return  # a home in use (a restart): it keeps its place
        home.rmdir()  # tmp_path_factory.mktemp's, still empty
    real = Path(tempfile.mkdtemp(prefix="wisp-e2e-home-"))
    os.chmod(real, 0o711)
    home.parent.mkdir(parents=True, exist_ok=True)
    home.symlink_to(real)
    _OPEN_HOMES.append(real)


_STARTED: list[tuple[Path, str]] = []  # every server a test started: its home, and the test


@pytest.fixture(scope="session", autouse=True)
def remove_open_homes() -> Iterator[None]:
    """At the end of the session no server a test started may still run (one that does keeps
    its containers and their uids, which other servers' isolation tests then meet): each one
    left is stopped and named; then the homes open_for_containers made outside pytest's
    folders go."""
    yield
    left = []
    for home, test in _STARTED:
        info = home / "server.json"
        if server_alive(home.resolve()) and info.exists():
            left.append(f"{test}: {home}")
            subprocess.run([*WISP, "server", "stop"], env={**os.environ, "WISP_HOME": str(home)},
                           capture_output=True, timeout=120)
    for real in _OPEN_HOMES:
        shutil.rmtree(real, ignore_errors=True)
    if left:
        print("\nwisp servers left running by tests (now stopped):\n  " + "\n  ".join(left), file=sys.stderr)


def start_wisp(home: Path, extra_env: dict[str, str] | None = None) -> Wisp:
    open_for_containers(home)
    wisp = Wisp(home, free_port(), extra_env)
    wisp.run("server", "start")
    _STARTED.append((home, os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]))
    return wisp


@contextlib.contextmanager
def server_with(tmp_path: Path, script: Path, **env: str) -> Iterator[Wisp]:
    """A server of the test's own, started with extra environment, with a copy of `script` deployed."""
    wisp = start_wisp(tmp_path / "home", env)
    try:
        shutil.copy(script, tmp_path / script.name)
        wisp.run("deploy", str(tmp_path / script.name))
        yield wisp
    finally:
        wisp.run("server", "stop", check=False)


@pytest.fixture(scope="session")
def wisp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    """The shared server most tests use."""
    w = start_wisp(tmp_path_factory.mktemp("home"))
    yield w
    w.run("server", "stop", check=False)


@pytest.fixture
def own_wisp(tmp_path: Path) -> Iterator[Wisp]:
    """A server of the test's own, for tests that stop or restart it."""
    w = start_wisp(tmp_path / "home")
    yield w
    w.run("server", "stop", check=False)


def admin(wisp: Wisp, path: str, token: bool = True) -> tuple[int, str]:
    """GET on the control API, with (or without) the token; (status, body)."""
    info = json.loads((wisp.home / "server.json").read_text())
    headers = {"Authorization": f"Bearer {(wisp.home / 'token').read_text().strip()}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{info['admin_port']}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get(url: str, **kwargs: object) -> requests.Response:
    kwargs.setdefault("timeout", 120)
    return requests.get(url, **kwargs)  # type: ignore[arg-type]


def post(url: str, **kwargs: object) -> requests.Response:
    kwargs.setdefault("timeout", 120)
    return requests.post(url, **kwargs)  # type: ignore[arg-type]


def wait_until(predicate, timeout: float = 30, interval: float = 0.1, message: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def processes_in_group(hint: str) -> list[str]:
    """Live processes whose command line or working directory mentions `hint` (an app's files
    folder, say: containers forked from a zygote keep the zygote's command line, but run in
    their version's folder). A link is followed: processes name the real path."""
    hint = os.path.realpath(hint)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd") + "/"
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (hint in argv or hint in cwd) and state != "Z":
            found.append(f"{entry.name} {cwd} {argv}")
    return found


def host_pid(container: str) -> int | None:
    """The pid here of the live process a test app named with its `container_id()`: its pid
    namespace's inode, its pid there and its start time ("4026531836:1234:5678", unique under
    every runtime, where each sandboxed container is pid 1 of a namespace of its own); None when
    there is none, or only its zombie."""
    namespace, pid, started = container.split(":")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid")[5:-1] != namespace:
                continue
            status = (entry / "status").read_text()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("NSpid", "").split()[-1:] == [pid] and stat[19] == started and stat[0] != "Z":
            return int(entry.name)
    return None

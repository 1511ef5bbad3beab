"""The container agent's lifecycle with a real process and real signals, without the server:
enter before the ready marker, state shared by requests, exit hooks after a SIGTERM drain."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from wisp._protocol import PREFIX, Ready, Start, decode

SCRIPT = '''
import asyncio, os, time
import wisp

stub = wisp.Stub("agent")
EVENTS = {events!r}


def record(line):
    with open(EVENTS, "a") as f:
        f.write(line + "\\n")


@stub.cls()
class Model:
    @wisp.enter()
    def load(self):
        time.sleep(0.3)  # a slow load: the container must not count as ready before it ends
        self.value = 42
        record("enter")

    @wisp.enter()
    async def connect(self):
        self.lock = asyncio.Lock()  # belongs to the loop that serves the requests

    @wisp.exit()
    def broken(self):
        raise ValueError("exit hook broke")

    @wisp.exit()
    async def close(self):
        async with self.lock:
            record("exit")

    @wisp.fastapi_endpoint()
    async def web(self, sleep: float = 0.0):
        async with self.lock:
            await asyncio.sleep(sleep)
        record(f"served {{sleep}}")
        return {{"value": self.value, "pid": os.getpid()}}

    @wisp.asgi_app()
    def failing_lifespan(self):
        from contextlib import asynccontextmanager
        from starlette.applications import Starlette

        @asynccontextmanager
        async def lifespan(app):
            raise RuntimeError("lifespan broke")
            yield

        return Starlette(lifespan=lifespan)


@stub.cls()
class Broken:
    @wisp.enter()
    def load(self):
        raise RuntimeError("weights missing")

    @wisp.fastapi_endpoint()
    def web(self):
        return "never"


class Seed:
    def __enter__(self):
        self.weights = 3
        record("seed enter")

    def __exit__(self, *exc):
        record(f"seed exit {{exc}}")

    @stub.webhook
    def predict(self, x: int):
        return {{"y": self.weights * x}}
'''


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def _drain(pipe: IO[str] | None, lines: list[str]) -> None:
    assert pipe is not None
    with pipe:
        for line in pipe:
            lines.append(line)


def _is_ready(line: str) -> bool:
    return line.startswith(PREFIX.decode()) and isinstance(decode(line.encode()), Ready)


class Agent:
    """One `python -m wisp._runtime` process serving one function of SCRIPT."""

    def __init__(self, folder: Path, function: str) -> None:
        self.socket = str(folder / f"{function}.sock")
        start = Start(directory=str(folder), module="agent_app", stub="stub", function=function, socket=self.socket)
        argv = [sys.executable, "-m", "wisp._runtime", "--start", start.to_arg()]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        # One reader per pipe, and only they read: communicate() would close a pipe under a reader.
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=_drain, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(_is_ready(line) for line in self.stdout):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent not ready (exit {self.proc.poll()}): {self.finish()[1]}")
            time.sleep(0.01)

    def get(self, path: str) -> dict[str, object]:
        conn = UnixConnection(self.socket)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200, response.read()
            return json.loads(response.read())
        finally:
            conn.close()

    def finish(self, timeout: float = 15) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leave nothing running, but fail the test
            self.proc.wait()
            raise
        for reader in self._readers:
            reader.join(5)
        return self.proc.returncode, "".join(self.stderr)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "agent_app.py").write_text(textwrap.dedent(SCRIPT.format(events=str(tmp_path / "events.txt"))))
    return tmp_path


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.proc.poll() is None:
            os.killpg(agent.proc.pid, signal.SIGKILL)
            agent.proc.wait()


def start(agents: list[Agent], folder: Path, function: str) -> Agent:
    agent = Agent(folder, function)
    agents.append(agent)
    return agent


def events(folder: Path) -> list[str]:
    path = folder / "events.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_enter_before_ready_state_shared_and_exit_after_sigterm_drain(folder: Path, agents: list[Agent]) -> None:
    agent = start(agents, folder, "Model.web")
    agent.wait_ready()
    assert events(folder) == ["enter"]  # written before the ready marker
    assert agent.get("/") == agent.get("/") == {"value": 42, "pid": agent.proc.pid}

    slow: list[dict[str, object]] = []
    request = threading.Thread(target=lambda: slow.append(agent.get("/?sleep=1.0")))
    request.start()
    time.sleep(0.3)  # the request is in flight
    agent.proc.send_signal(signal.SIGTERM)
    request.join(10)
    code, err = agent.finish()

    assert slow == [{"value": 42, "pid": agent.proc.pid}]  # drained, not cut
    assert events(folder) == ["enter", "served 0.0", "served 0.0", "served 1.0", "exit"]
    assert code == 0
    assert "Model: enter finished in 0." in err
    assert "Model.broken raised while the container was stopping:" in err
    assert "ValueError: exit hook broke" in err


def test_seed_form_enters_and_exits_around_serving(folder: Path, agents: list[Agent]) -> None:
    agent = start(agents, folder, "Seed.predict")
    agent.wait_ready()
    assert agent.get("/?x=5") == {"y": 15}
    agent.proc.send_signal(signal.SIGTERM)
    code, _ = agent.finish()
    assert code == 0
    assert events(folder) == ["seed enter", "seed exit (None, None, None)"]


def test_enter_that_raises_exits_non_zero_with_the_exception_last(folder: Path, agents: list[Agent]) -> None:
    agent = start(agents, folder, "Broken.web")
    code, err = agent.finish()
    assert code == 1
    assert not any(_is_ready(line) for line in agent.stdout)
    assert "Broken.load raised while the container was starting:" in err
    assert err.strip().splitlines()[-1] == "RuntimeError: weights missing"  # what the pool shows as the 503


def test_exit_hooks_run_when_uvicorn_fails_to_start(folder: Path, agents: list[Agent]) -> None:
    agent = start(agents, folder, "Model.failing_lifespan")
    code, err = agent.finish()
    assert code != 0
    assert not any(_is_ready(line) for line in agent.stdout)
    assert events(folder) == ["enter", "exit"]
    assert "lifespan broke" in err

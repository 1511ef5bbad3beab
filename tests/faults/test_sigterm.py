"""SIGTERM drains (issue 11, point 3) and restarts never answer 404 (point 7).

Each test has a server of its own with `drain_app.py` deployed, counts what it sent, what was
answered and what was lost, prints those counts, and is bounded by generous timeouts.
"""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.conftest import Wisp, free_port, wait_until
from e2e.wsclient import WebSocket

from .conftest import leftovers

APP = Path(__file__).parent / "apps" / "drain_app.py"
PATH = "/drain--drain-api"
EXIT_MARGIN = 25.0  # beyond the grace: containers get 10 s for their exit hooks, then the zygotes go


@dataclass
class Drain:
    wisp: Wisp
    grace: float

    @property
    def port(self) -> int:
        return self.wisp.port

    def get(self, rest: str, timeout: float = 60, closes: list[str] | None = None) -> int:
        """One request on a (keep-alive) connection of its own; its status. `closes` collects
        the response's Connection header."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", PATH + rest)
            resp = conn.getresponse()
            resp.read()
            if closes is not None:
                closes.append(resp.getheader("connection", ""))
            return resp.status
        finally:
            conn.close()

    def _events(self) -> list[str]:
        """What the app printed (drain_app's `note`), from its log file: also once the server is gone."""
        path = self.wisp.home / "logs" / "drain.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [line.split("[drain] ", 1)[1] for line in lines if "[drain] " in line]

    def started(self) -> list[str]:
        return [event.split()[1] for event in self._events() if event.startswith("started ")]

    def exit_hooks(self) -> list[str]:
        return [event for event in self._events() if event == "exit hook ran"]


def start(tmp_path: Path, grace: float, port: int | None = None) -> Drain:
    wisp = Wisp(tmp_path / "home", port or free_port(), {"WISP_SHUTDOWN_GRACE": str(grace)})
    wisp.run("server", "start")
    shutil.copy(APP, tmp_path / APP.name)
    wisp.run("deploy", str(tmp_path / APP.name))
    drain = Drain(wisp, grace)
    assert drain.get("/sleep?tag=warm") == 200  # the container is up before anything is counted
    return drain


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Drain]]:
    """Servers a test starts; any still running at the end are stopped."""
    started: list[Drain] = []
    yield started
    for drain in started:
        drain.wisp.run("server", "stop", check=False, timeout=120)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited; its new parent may never reap it here


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def in_flight(drain: Drain, tags: list[str], results: dict[str, object], closes: list[str]) -> list[threading.Thread]:
    """Start one 2 s request per tag, each on its own connection; wait until all have reached the app."""
    def one(tag: str) -> None:
        try:
            results[tag] = drain.get(f"/sleep?seconds=2&tag={tag}", closes=closes)
        except (OSError, http.client.HTTPException) as exc:
            results[tag] = exc
    threads = [threading.Thread(target=one, args=(tag,), daemon=True) for tag in tags]
    for t in threads:
        t.start()
    wait_until(lambda: set(tags) <= set(drain.started()), timeout=30, message="the requests to reach the app")
    return threads


def report(name: str, sent: int, results: dict[str, object]) -> Counter[str]:
    counts = Counter("answered" if r == 200 else f"status {r}" if isinstance(r, int) else "lost"
                     for r in results.values())
    counts["lost"] += sent - len(results)  # never came back at all
    print(f"\n{name}: sent {sent}, answered {counts['answered']}, lost {counts['lost']}, "
          f"other {sum(counts.values()) - counts['answered'] - counts['lost']} {dict(counts)}")
    return counts


def test_sigterm_lets_in_flight_requests_finish_then_runs_exit_hooks(tmp_path: Path, servers: list[Drain]) -> None:
    drain = start(tmp_path, grace=15)
    servers.append(drain)
    pid = drain.wisp.server_pid()
    tags = [f"r{i}" for i in range(8)]
    results: dict[str, object] = {}
    closes: list[str] = []
    threads = in_flight(drain, tags, results, closes)
    signalled = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    # New connections are refused while the 2 s requests are still being served.
    wait_until(lambda: refused(drain.port), timeout=10, interval=0.02, message="the port to refuse connections")
    refused_while_serving = len(results) < len(tags)
    for t in threads:
        t.join(30)
    wait_until(lambda: gone(pid), timeout=drain.grace + EXIT_MARGIN, message="the server to exit")
    took = time.monotonic() - signalled
    counts = report("SIGTERM with 8 requests in flight", len(tags), results)
    print(f"server exited {took:.1f} s after SIGTERM; exit hooks ran: {len(drain.exit_hooks())}")
    assert counts["answered"] == len(tags), results
    assert closes == ["close"] * len(tags)  # each was its connection's last response
    assert refused_while_serving
    assert drain.exit_hooks(), "the container's exit hook did not run"
    assert took < drain.grace + EXIT_MARGIN


def test_an_open_websocket_finishes_its_exchange(tmp_path: Path, servers: list[Drain]) -> None:
    drain = start(tmp_path, grace=90)
    servers.append(drain)
    pid = drain.wisp.server_pid()
    sent = answered = 0
    with WebSocket(drain.port, PATH + "/ws", timeout=30) as ws:
        assert ws.recv() == "ready"
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: refused(drain.port), timeout=10, interval=0.02, message="the port to refuse connections")
        for text in ("one", "two", "three"):
            sent += 1
            ws.send(text)
            answered += ws.recv() == "echo:" + text
        ws.close()
    signalled = time.monotonic()
    # The drain ends when the WebSocket does, long before the 90 s grace.
    wait_until(lambda: gone(pid), timeout=drain.grace / 2, message="the server to exit once the WebSocket closed")
    print(f"\nWebSocket across SIGTERM: sent {sent}, answered {answered}, lost {sent - answered}; "
          f"server exited {time.monotonic() - signalled:.1f} s after the close")
    assert answered == sent
    assert drain.exit_hooks()


def test_a_second_sigterm_forces_a_quick_stop(tmp_path: Path, servers: list[Drain]) -> None:
    drain = start(tmp_path, grace=120)
    servers.append(drain)
    pid = drain.wisp.server_pid()
    results: dict[str, object] = {}

    def long() -> None:
        try:
            results["long"] = drain.get("/sleep?seconds=100&tag=long", timeout=150)
        except (OSError, http.client.HTTPException) as exc:
            results["long"] = exc
    thread = threading.Thread(target=long, daemon=True)
    thread.start()
    wait_until(lambda: "long" in drain.started(), timeout=30, message="the long request to reach the app")
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: refused(drain.port), timeout=10, interval=0.02, message="the port to refuse connections")
    time.sleep(0.5)
    assert not gone(pid), "the first SIGTERM must drain, not stop at once"
    forced = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: gone(pid), timeout=30, message="the server to exit after the second SIGTERM")
    took = time.monotonic() - forced
    thread.join(30)
    wait_until(lambda: not leftovers(drain.wisp.home), timeout=15, message="no process of the home to be left")
    counts = report("second SIGTERM with a 100 s request in flight", 1, results)
    print(f"server exited {took:.1f} s after the second SIGTERM (grace 120 s)")
    assert counts["lost"] == 1  # forced: the request is cut, as asked
    assert took < 30


def test_requests_during_a_restart_never_get_404(tmp_path: Path, servers: list[Drain]) -> None:
    drain = start(tmp_path, grace=15)
    servers.append(drain)
    statuses: Counter[str] = Counter()
    stop_polling = threading.Event()
    restarted = threading.Event()
    after_restart: list[int] = []

    def poll() -> None:
        while not stop_polling.is_set():
            try:
                status = drain.get("/sleep?tag=poll", timeout=60)
            except ConnectionRefusedError:
                statuses["refused"] += 1  # down, or not yet accepting: the client can tell and retry
                time.sleep(0.01)
                continue
            except ConnectionResetError:
                # A connection the kernel had queued for the old server's listening socket when it
                # closed is reset, not refused (uvicorn's too): the request was never read. Only
                # while the old server stops; after the restart every request must be answered.
                statuses["reset" if not restarted.is_set() else "lost ConnectionResetError"] += 1
                continue
            except (OSError, http.client.HTTPException) as exc:
                statuses[f"lost {type(exc).__name__}"] += 1
                continue
            statuses[str(status)] += 1
            if restarted.is_set():
                after_restart.append(status)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    wait_until(lambda: statuses["200"] >= 5, timeout=30, message="requests before the restart")
    drain.wisp.run("server", "stop", timeout=120)
    restarted.set()
    drain.wisp.run("server", "start", timeout=120)
    wait_until(lambda: after_restart.count(200) >= 20, timeout=120, message="requests after the restart")
    stop_polling.set()
    poller.join(90)
    sent = sum(statuses.values())
    print(f"\nrestart while polling: sent {sent}, answered {statuses['200']}, refused {statuses['refused']}, "
          f"404 {statuses['404']}, all {dict(statuses)}")
    assert statuses["404"] == 0
    assert set(statuses) <= {"200", "refused", "reset"} and statuses["reset"] <= 2, statuses

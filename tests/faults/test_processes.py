"""Nothing is orphaned (issue 11, point 2): a server killed with -9 takes its zygotes and
containers with it, the next start ends whatever an earlier run left, a failed start leaves
nothing running, and dead containers leave no socket files behind."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from e2e.conftest import Wisp, get, host_pid, open_for_containers, start_wisp, wait_until

from .conftest import descendants, leftovers, still_alive

APPS = Path(__file__).parent / "apps"
GONE_WITHIN = 10.0  # seconds for everything of a killed server to be gone (it takes well under one)


def _deploy(wisp: Wisp, tmp_path: Path, name: str) -> None:
    shutil.copy(APPS / name, tmp_path / name)
    wisp.run("deploy", str(tmp_path / name))


def _kill_all(lines: list[str]) -> None:
    """A failing test still leaves nothing running."""
    for line in lines:
        with _quiet():
            os.kill(int(line.split()[0]), signal.SIGKILL)


class _quiet:
    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: object, *_: object) -> bool:
        return kind is not None and issubclass(kind, OSError)  # type: ignore[arg-type]


class Load:
    """Clients sending requests to `url` until stopped; counts sent, answered (200) and lost."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self.url = url
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            self.counts["sent"] += 1
            try:
                ok = session.get(self.url, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            self.counts["answered" if ok else "lost"] += 1

    def stop(self) -> Counter[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.counts


def _wait_gone(home: Path, before: dict[int, str]) -> tuple[list[str], list[str], float]:
    """Wait (at most GONE_WITHIN s) until neither the killed server's descendants nor any process
    of `home` is left; what is left then, and how long it took."""
    started = time.monotonic()
    while True:
        alive, other = still_alive(before), leftovers(home)
        if (not alive and not other) or time.monotonic() - started > GONE_WITHIN:
            return alive, other, time.monotonic() - started
        time.sleep(0.1)


def test_kill_9_of_the_server_under_load_leaves_no_process_and_a_restart_serves(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home")
    left: list[str] = []
    try:
        _deploy(wisp, tmp_path, "procs_app.py")
        spawned = get(wisp.url("procs--spawner")).json()  # a forked container with a child of its own
        assert get(wisp.url("procs--fresh")).status_code == 200  # a fresh process (fork=False)
        load = Load(wisp.url("procs--hello", "/?hold=0.05"))
        wait_until(lambda: load.counts["answered"] >= 50, 60, message="the load to be served")
        before = descendants(wisp.server_pid())
        assert host_pid(spawned["pid"]) in before and host_pid(spawned["child"]) in before, (spawned, before)
        os.kill(wisp.server_pid(), signal.SIGKILL)
        counts = load.stop()  # what was in flight is lost with the server; nothing more is sent
        alive, other, took = _wait_gone(wisp.home, before)
        left = alive + other
        print(f"\nkill -9 under load: {len(before)} processes below the server; left after {took:.1f} s: "
              f"{len(alive)} of them, {len(other)} of the home; requests {dict(counts)}")
        assert not alive and not other, "\n".join(left)

        wisp.run("server", "start")
        answered = sum(get(wisp.url("procs--hello")).status_code == 200 for _ in range(20))
        print(f"after the restart: 20 sent, {answered} answered, {20 - answered} lost")
        assert answered == 20
    finally:
        wisp.run("server", "stop", check=False)
        left = leftovers(wisp.home)
        _kill_all(left)
    assert not left, "\n".join(left)


def test_a_start_ends_what_an_earlier_run_left_and_spares_a_reused_pid(tmp_path: Path) -> None:
    """A fresh process's own child outlives a kill -9 (the parent-death signal reaches only the
    container itself), so the next start of the home ends it, from the run's record; a recorded
    pid that now belongs to another program (its start time differs) is left alone."""
    wisp = start_wisp(tmp_path / "home", {"WISP_RUNTIME": "local"})  # every container a fresh process
    stranger = subprocess.Popen(["sleep", "600"])
    left: list[str] = []
    try:
        _deploy(wisp, tmp_path, "procs_app.py")
        spawned = get(wisp.url("procs--spawner")).json()
        before = descendants(wisp.server_pid())
        container_pid, child_pid = host_pid(spawned["pid"]), host_pid(spawned["child"])
        assert container_pid in before and child_pid in before, (spawned, before)
        container, child = {container_pid: before[container_pid]}, {child_pid: before[child_pid]}
        records = list((wisp.home / "run").glob("groups-*"))
        assert records, "the server records the process groups it starts"
        with records[0].open("a") as f:
            f.write(f"{stranger.pid} 1\n")  # the stranger's pid, with a start time it does not have
        os.kill(wisp.server_pid(), signal.SIGKILL)
        wait_until(lambda: not still_alive(container), GONE_WITHIN, message="the container to die with its server")
        outlived = bool(still_alive(child))
        print(f"\nkill -9 (local runtime): {len(before)} processes below the server; the container's own child "
              f"{'outlived it' if outlived else 'died too'}")

        wisp.run("server", "start")
        wait_until(lambda: not still_alive(child), GONE_WITHIN, message="the next start to end the container's child")
        assert stranger.poll() is None, "a start must never signal a pid that is not what it recorded"
        assert get(wisp.url("procs--hello")).status_code == 200
    finally:
        wisp.run("server", "stop", check=False)
        left = leftovers(wisp.home)
        _kill_all(left)
        stranger.kill()
        stranger.wait()
    assert not left, "\n".join(left)


def test_a_start_that_fails_leaves_nothing_running(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home")
    left: list[str] = []
    try:
        _deploy(wisp, tmp_path, "procs_app.py")  # zygotes and warm containers, restored at each start
        wisp.run("server", "stop")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", wisp.port))
            taken.listen()
            failed = wisp.run("server", "start", check=False)
            time.sleep(1.0)  # what a failed start might have left would be running now
            left = leftovers(wisp.home)
        print(f"\nstart with the port in use: exit {failed.returncode}; {len(left)} processes left")
        assert failed.returncode != 0
        assert f"Port {wisp.port} is in use" in failed.stdout + failed.stderr
        assert not left, "\n".join(left)
    finally:
        wisp.run("server", "stop", check=False)
        _kill_all(leftovers(wisp.home))


def test_socket_files_of_dead_containers_are_removed_as_they_die(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"  # the server's own temporary folder: its socket files are all there
    open_for_containers(tmp)  # app uids pass through it to their socket folders
    tmp.mkdir(exist_ok=True)
    tmp = tmp.resolve()
    wisp = start_wisp(tmp_path / "home", {"TMPDIR": str(tmp)})
    counts: Counter[str] = Counter()
    try:
        _deploy(wisp, tmp_path, "crash_app.py")
        for _ in range(40):  # each container answers once, then exits
            counts["sent"] += 1
            try:
                response = get(wisp.url("crashy--once"), timeout=60)
            except requests.RequestException:
                counts["lost"] += 1
                continue
            counts["answered" if response.status_code == 200 else "lost"] += 1
            if response.status_code == 200:
                container = response.json()["pid"]
                wait_until(lambda: host_pid(container) is None, 30, message="the container to exit")  # noqa: B023 (called at once)
        time.sleep(0.5)
        sockets = list(tmp.rglob("*.sock"))
        print(f"\n40 container deaths: requests {dict(counts)}; {len(sockets)} socket files left")
        assert counts["answered"] >= 30, counts
        assert len(sockets) <= 8, sockets
    finally:
        wisp.run("server", "stop", check=False)
        _kill_all(leftovers(wisp.home))


def test_a_start_that_fails_after_its_apps_came_back_leaves_nothing_running(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home")
    left: list[str] = []
    try:
        _deploy(wisp, tmp_path, "procs_app.py")  # restored at the next start: zygotes, warm containers
        wisp.run("server", "stop")
        (wisp.home / "server.json.tmp").mkdir()  # writing server.json, after the restore, fails
        failed = wisp.run("server", "start", check=False)
        time.sleep(1.0)
        left = leftovers(wisp.home)
        print(f"\nstart failing after the restore: exit {failed.returncode}; {len(left)} processes left")
        assert failed.returncode != 0
        assert not left, "\n".join(left)
    finally:
        (wisp.home / "server.json.tmp").rmdir()
        wisp.run("server", "stop", check=False)
        _kill_all(leftovers(wisp.home))


def test_server_stop_finishes_when_a_detached_child_holds_a_containers_output(tmp_path: Path) -> None:
    """A process that left its container's group keeps the container's output pipe open: the
    container's exit must still be noticed, so the stop finishes."""
    wisp = start_wisp(tmp_path / "home")
    detached = None
    try:
        _deploy(wisp, tmp_path, "procs_app.py")
        detached = host_pid(get(wisp.url("procs--detacher")).json()["child"])
        started = time.monotonic()
        stopped = wisp.run("server", "stop", check=False, timeout=120)
        took = time.monotonic() - started
        print(f"\nserver stop with a detached child holding the output: exit {stopped.returncode} in {took:.1f} s")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    finally:
        if detached is not None:
            with _quiet():
                os.kill(detached, signal.SIGKILL)
        wisp.run("server", "stop", check=False)
        _kill_all(leftovers(wisp.home))


def test_what_a_dead_container_started_dies_with_it_while_the_server_runs(tmp_path: Path) -> None:
    """A container that exits on its own (a crash, os._exit) takes the processes it started with
    it, now: not at the server's stop, not at the next start (issue 11, point 2)."""
    wisp = start_wisp(tmp_path / "home")
    try:
        _deploy(wisp, tmp_path, "leaves_child.py")
        answer = get(wisp.url("leaves-child--once"), timeout=60)
        assert answer.status_code == 200, answer.text
        pids = answer.json()
        wait_until(lambda: host_pid(pids["pid"]) is None, 30, message="the container to exit")
        wait_until(lambda: host_pid(pids["child"]) is None, 30, message="the dead container's child to be ended")
        assert get(wisp.url("leaves-child--once"), timeout=60).status_code == 200  # the app serves on
    finally:
        wisp.run("server", "stop", check=False)
        _kill_all(leftovers(wisp.home))

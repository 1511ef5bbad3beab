"""Limits are enforced and reported (issue 15, point 2), with a real server and real containers.

A hostile app (apps/hog.py) allocates past its memory limit: its request gets a 502 saying
"out of memory (limit 160 MiB)", the kill is in its log and in `wisp app list`, and a new
container serves the next request, while a neighbour function and another app (apps/victim.py)
keep answering. It fork-bombs: the bomb stops at the pids limit and the server stays healthy. Its
CPU quota is in its slot's files. Slots go when their containers do, and a start removes those a
server killed with -9 left. Every runtime: containers forked from a zygote, fresh processes, and
the sandbox (whose containers, forked from a zygote behind pivot_root, join their slots through
files the server opened for them).

Skipped, with the reason, where this process cannot create cgroups (not root, no controller).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from e2e.conftest import Wisp, admin, get, start_wisp, wait_until
from wisp._runtime import sandbox
from wisp.server.runtime.limits import base_weight, missing_lines
from wisp.server.runtime.slots import detect

from .conftest import leftovers

APPS = Path(__file__).parent / "apps"
PIDS_LIMIT = 100  # the test server's WISP_PIDS_LIMIT: the bomb goes off only under a limit this low
LIMIT_MB = 160  # hog.py's memory=(64, 160)


def _cgroups_problem() -> str | None:
    """Why this process cannot run containers under limits here, or None."""
    hierarchy = detect()
    if not hierarchy.folders or hierarchy.missing:
        return "; ".join(missing_lines(hierarchy)) or "no cgroups"
    for folder in set(hierarchy.folders.values()):
        probe = f"{folder}/wisp-probe-{os.getpid()}"
        try:
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError as exc:
            return f"cannot create cgroups in {folder}: {exc.strerror} (the server needs root, or a delegated cgroup)"
    return None


PROBLEM = _cgroups_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"cgroups are not writable here: {PROBLEM}")


def _deploy(wisp: Wisp, root: Path, name: str) -> None:
    shutil.copy(APPS / name, root / name)
    wisp.run("deploy", str(root / name))


def _slot_folders(home: Path) -> list[str]:
    """The server's cgroup folders for slots, from its run record."""
    return list(json.loads((home / "run" / "run.json").read_text()).get("cgroups", []))


def _slots_in(folders: list[str]) -> list[str]:
    """The slots below the server's folders (v2: below each app's folder): c<N> and z<N>."""
    found = []
    for folder in folders:
        for parent, names, _ in os.walk(folder):
            found += [os.path.join(parent, n) for n in names if n[:1] in "cz" and n[1:].isdigit()]
    return found


def _sandbox_missing() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox's per-app uids need a server running as root"
    missing = sandbox.probe()
    return f"the kernel refuses: {missing}" if missing else None


@pytest.fixture(scope="module", params=["zygote", "local", "sandbox"])
def hog(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    if request.param == "sandbox" and _sandbox_missing() is not None:
        pytest.skip(str(_sandbox_missing()))
    root = tmp_path_factory.mktemp("limits")
    wisp = start_wisp(root / "home", {"WISP_RUNTIME": request.param, "WISP_PIDS_LIMIT": str(PIDS_LIMIT)})
    try:
        _deploy(wisp, root, "hog.py")
        _deploy(wisp, root, "victim.py")
        yield wisp
    finally:
        wisp.run("server", "stop", check=False)


class Neighbours:
    """Requests to another function of the app and to another app, back to back, until stopped:
    what they were answered."""

    def __init__(self, wisp: Wisp) -> None:
        self.urls = [wisp.url("limits-hog--alive"), wisp.url("iso-victim--alive")]
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for url in self.urls:
                try:
                    self.counts[str(requests.get(url, timeout=30).status_code)] += 1
                except requests.RequestException as exc:
                    self.counts[type(exc).__name__] += 1
            time.sleep(0.02)

    def stop(self) -> Counter[str]:
        self._stop.set()
        self._thread.join(60)
        return self.counts


def _read_on_host(cgroup: str, controller: str, name: str) -> str | None:
    """A container's cgroup file, read here from the folder its /proc/self/cgroup names (a
    sandboxed container has no /sys/fs/cgroup to read it from itself)."""
    lines = cgroup.splitlines()
    folder = next((f"/sys/fs/cgroup/{controller}{line.split(':', 2)[2]}" for line in lines
                   if controller in line.split(":")[1].split(",")), None)
    if folder is None:
        folder = next(("/sys/fs/cgroup" + line[3:] for line in lines if line.startswith("0::")), None)
    try:
        return Path(f"{folder}/{name}").read_text().strip()
    except (OSError, TypeError):
        return None


def test_the_limits_are_in_the_containers_own_slot(hog: Wisp) -> None:
    found = get(hog.url("limits-hog--limits")).json()
    if hog.env["WISP_RUNTIME"] == "sandbox":  # it cannot read them itself: from here, in the slot it joined
        assert found["memory_bytes"] is None, "a sandboxed container sees no /sys/fs/cgroup"
        for key, controller, names in (("memory_bytes", "memory", ("memory.limit_in_bytes", "memory.max")),
                                       ("pids_max", "pids", ("pids.max",)),
                                       ("cfs_quota_us", "cpu", ("cpu.cfs_quota_us",)),
                                       ("cfs_period_us", "cpu", ("cpu.cfs_period_us",)), ("cpu_max", "cpu", ("cpu.max",))):
            found[key] = next((v for v in (_read_on_host(found["cgroup"], controller, n) for n in names) if v), None)
    print("the container's limits:", json.dumps(found, indent=1))
    lines = found["cgroup"].splitlines()
    v1 = [line for line in lines if {"memory", "pids", "cpu"} & set(line.split(":")[1].split(","))]
    joined = v1 or [line for line in lines if line.startswith("0::")]  # v2: its one line
    assert joined and all(f"/wisp-{hog.server_pid()}/" in line for line in joined), found["cgroup"]
    assert int(found["memory_bytes"]) == LIMIT_MB << 20
    assert found["pids_max"] == str(PIDS_LIMIT)
    if found["cpu_max"] is not None:  # v2
        assert found["cpu_max"] == "50000 100000"
    else:  # v1: cpu=(0.25, 0.5) is half a core of quota per period
        assert (found["cfs_quota_us"], found["cfs_period_us"]) == ("50000", "100000")


def test_containers_are_batch_class_and_weigh_together_as_the_containers_the_machine_fits(hog: Wisp) -> None:
    """A woken container does not preempt the server (SCHED_BATCH), and the folder of all slots
    weighs, against the server beside it, what that many plain processes would (docs/profiling.md,
    "The limits' CPU weight")."""
    assert get(hog.url("limits-hog--limits")).json()["policy"] == os.SCHED_BATCH
    folders = _slot_folders(hog.home)
    cpu = next((f for f in folders if "/cpu/" in f or "/cpu," in f), None)
    if cpu is not None:  # v1: the cpu hierarchy's folder
        assert Path(cpu, "cpu.shares").read_text().strip() == str(base_weight(1, os.cpu_count() or 1))
    else:  # v2: the one folder
        assert Path(folders[0], "cpu.weight").read_text().strip() == str(base_weight(2, os.cpu_count() or 1))


def test_the_function_zygote_imports_the_script_under_limits_too(hog: Wisp) -> None:
    """The zygote runtime: the function zygote runs user code (the import) in a slot of its own."""
    if hog.env["WISP_RUNTIME"] not in ("zygote", "sandbox"):
        pytest.skip("fresh processes have no function zygote")
    folders = _slot_folders(hog.home)
    memory = next((f for f in folders if "/memory/" in f), folders[0])  # v1: the memory hierarchy's; v2: the one
    zygotes = [f for f in _slots_in([memory]) if os.path.basename(f).startswith("z")]
    held = {f: Path(f, "cgroup.procs").read_text().split() for f in zygotes}
    assert any(held.values()), held
    for folder, pids in held.items():
        if pids:
            limit = Path(folder, "memory.limit_in_bytes" if Path(folder, "memory.limit_in_bytes").exists()
                         else "memory.max").read_text().strip()
            assert limit.isdigit() and int(limit) <= 1024 << 20, (folder, limit)


def test_a_container_past_its_memory_limit_gets_a_502_and_is_replaced_while_neighbours_answer(hog: Wisp) -> None:
    first = get(hog.url("limits-hog--grow")).json()["pid"]
    neighbours = Neighbours(hog)
    try:
        wait_until(lambda: neighbours.counts["200"] >= 4, 60, message="the neighbours to answer")
        killed = get(hog.url("limits-hog--grow"), params={"mb": 1024})
        time.sleep(0.5)  # the neighbours go on through the kill and the replacement
    finally:
        counts = neighbours.stop()
    print(f"\nover the limit: {killed.status_code} {killed.text}; neighbours answered {dict(counts)}")
    assert killed.status_code == 502
    assert f"out of memory (limit {LIMIT_MB} MiB)" in killed.json()["error"]
    assert set(counts) == {"200"}, counts  # siblings and other apps never noticed

    after = get(hog.url("limits-hog--grow"))
    assert after.status_code == 200 and after.json()["pid"] != first  # a new container

    log = hog.run("app", "logs", "limits-hog").stdout
    assert f"killed: out of memory (limit {LIMIT_MB} MiB)" in log, log[-2000:]
    listed = hog.run("app", "list").stdout
    assert f"killed for memory: 1 container(s), the last out of memory (limit {LIMIT_MB} MiB)" in listed, listed
    status, body = admin(hog, "/v1/apps")
    grow = next(ep for app in json.loads(body)["apps"] for ep in app["endpoints"] if ep["function"] == "grow")
    assert status == 200 and grow["oom_kills"] == 1 and grow["last_oom"] == f"out of memory (limit {LIMIT_MB} MiB)"


class PidsPeak:
    """The most processes a slot held, read here (on the host) every few milliseconds until stopped."""

    def __init__(self, cgroup: str) -> None:
        self.cgroup, self.peak = cgroup, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, int(_read_on_host(self.cgroup, "pids", "pids.current") or 0))
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.peak


def test_a_fork_bomb_stops_at_the_pids_limit_and_the_server_stays_healthy(hog: Wisp) -> None:
    params: dict[str, object] = {"hold": 3, "bound": 2 * PIDS_LIMIT}
    peak = None
    if hog.env["WISP_RUNTIME"] == "sandbox":  # it cannot read its slot's files: the limit, read from here
        probe = get(hog.url("limits-hog--bomb"), params={"bound": 0}).json()
        assert not probe["went_off"] and probe["pids_max"] is None, probe
        params["checked"] = int(_read_on_host(probe["cgroup"], "pids", "pids.max") or 0)
        assert params["checked"] == PIDS_LIMIT
        peak = PidsPeak(probe["cgroup"])
    neighbours = Neighbours(hog)
    try:
        started = time.monotonic()
        bomb = get(hog.url("limits-hog--bomb"), params=params, timeout=60)
        took = time.monotonic() - started
        time.sleep(0.5)  # its processes hold their places until `hold` is over
    finally:
        counts = neighbours.stop()
        most = peak.stop() if peak is not None else None
    found = bomb.json()
    print(f"\nfork bomb: {found} in {took:.1f} s; at most {most} processes seen here; neighbours answered {dict(counts)}")
    assert bomb.status_code == 200 and found["went_off"], found
    if peak is not None:  # the same warm container, whose slot was read and watched from here
        assert found["cgroup"] == probe["cgroup"] and PIDS_LIMIT // 2 < most <= PIDS_LIMIT, most
    else:
        assert found["pids_max"] == str(PIDS_LIMIT) and int(found["pids_current"]) <= PIDS_LIMIT
    assert found["refused"] >= 1  # the kernel said no: the limit, not the deadline, stopped it
    assert set(counts) == {"200"}, counts
    assert admin(hog, "/v1/apps")[0] == 200  # the control API too


def test_slots_go_with_their_containers_and_a_start_removes_what_a_killed_server_left(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home")
    left: list[str] = []
    try:
        _deploy(wisp, tmp_path, "hog.py")
        assert get(wisp.url("limits-hog--grow")).status_code == 200
        folders = _slot_folders(wisp.home)
        assert folders and _slots_in(folders), "the server makes its slots below its folders"
        wisp.run("app", "stop", "limits-hog")
        wait_until(lambda: not _slots_in(folders), 30, message="the stopped app's slots to be removed")

        _deploy(wisp, tmp_path, "hog.py")
        assert get(wisp.url("limits-hog--grow")).status_code == 200
        killed = _slot_folders(wisp.home)
        os.kill(wisp.server_pid(), signal.SIGKILL)
        wait_until(lambda: not leftovers(wisp.home), 30, message="the killed server's processes to be gone")
        assert all(os.path.isdir(f) for f in killed)  # the kernel keeps cgroups nobody removes

        wisp.run("server", "start")
        assert not any(os.path.isdir(f) for f in killed), "the next start removes an earlier run's slots"
        assert get(wisp.url("limits-hog--grow")).status_code == 200
        running = _slot_folders(wisp.home)
        wisp.run("server", "stop")
        assert not any(os.path.isdir(f) for f in running), "a stopped server leaves no cgroup behind"
    finally:
        wisp.run("server", "stop", check=False)
        left = leftovers(wisp.home)
        for line in left:
            with contextlib.suppress(OSError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not left, "\n".join(left)

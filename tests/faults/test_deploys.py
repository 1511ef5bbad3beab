"""A version that cannot become ready never replaces one that can (issue 11, point 4).

Each test deploys a working version, keeps it busy, then deploys a version that cannot become
ready, and counts what the working one answered, what was lost, and what the failed version left
running. Every step has a bound: subprocess timeouts, `wait_until` deadlines, thread joins.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

from e2e.conftest import WISP, Wisp, get, processes_in_group, wait_until

APPS = Path(__file__).parent / "apps"


def place(tmp_path: Path, app: str, folder: str, name: str = "fault_app.py") -> Path:
    """A copy of `apps/<app>` in a folder of its own (each deploy ships its script's folder)."""
    target = tmp_path / folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(APPS / app, target)
    return target


class Client:
    """Requests to one URL in a loop, each bounded by `timeout`: how many were sent, answered
    with the expected body, and lost (an error, another status or body, or no answer in time)."""

    def __init__(self, url: str, expected: str, timeout: float = 20) -> None:
        self.url, self.expected, self.timeout = url, expected, timeout
        self.sent = self.answered = 0
        self.longest = 0.0  # seconds, the slowest request
        self.lost: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                self.sent += 1
                started = time.monotonic()
                try:
                    r = session.get(self.url, timeout=self.timeout)
                except requests.RequestException as exc:
                    self.lost.append(f"{type(exc).__name__}: {exc}")
                    continue
                finally:
                    self.longest = max(self.longest, time.monotonic() - started)
                if r.status_code == 200 and r.json() == self.expected:
                    self.answered += 1
                else:
                    self.lost.append(f"{r.status_code} {r.text[:200]}")
                time.sleep(0.02)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 10)

    def figures(self) -> str:
        return (f"sent {self.sent}, answered {self.answered}, lost {len(self.lost)} {self.lost[:3]}, "
                f"slowest {self.longest:.1f} s")


def version_processes(wisp: Wisp, app: str, version: int) -> list[str]:
    """Zygotes and containers of one version: they run in its folder."""
    return processes_in_group(f"{wisp.home}/apps/{app}/v{version}")


def wait_gone(wisp: Wisp, app: str, version: int, timeout: float = 30) -> list[str]:
    """The version's processes still alive after `timeout` seconds (none, if it cleaned up)."""
    deadline = time.monotonic() + timeout
    while (left := version_processes(wisp, app, version)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def deploy_and_check(wisp: Wisp, script: Path, label: str, expected: str) -> str:
    """Deploy `script`; the URL of `label`, which answers `expected`."""
    wisp.run("deploy", str(script))
    url = wisp.url(label)
    assert get(url).json() == expected
    return url


def assert_refused_and_v1_served(code: int, output: str, reason: str, client: Client, left: list[str]) -> None:
    """The deploy of v2 failed with `reason`, v1 answered every request, nothing of v2 is left."""
    assert code != 0, output
    assert reason in output, output
    assert "version 1 keeps serving" in output, output
    assert client.sent > 5 and not client.lost and client.answered == client.sent, client.figures()
    assert not left, left


def test_a_hanging_import_fails_its_deploy_blocks_no_other_app_and_loses_no_request(
        own_wisp: Wisp, tmp_path: Path) -> None:
    wisp = own_wisp
    url = deploy_and_check(wisp, place(tmp_path, "deploy_a.py", "a1"), "fault-a--hello", "v1")

    with Client(url, "v1") as client:
        wait_until(lambda: client.answered >= 5, timeout=60, message="the client loop to get answers from v1")
        started = time.monotonic()
        a2 = subprocess.Popen([*WISP, "deploy", str(place(tmp_path, "deploy_a_hangs.py", "a2"))], env=wisp.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # v2's import is under way (its zygote runs in v2's folder): now deploy another app.
            wait_until(lambda: version_processes(wisp, "fault-a", 2) or a2.poll() is not None, timeout=120,
                       message="version 2 of fault-a to start importing")
            b_started = time.monotonic()
            b = wisp.run("deploy", str(place(tmp_path, "deploy_b.py", "b")), check=False, timeout=300)
            b_took = time.monotonic() - b_started
            a2_pending_when_b_done = a2.poll() is None
            a2_output, _ = a2.communicate(timeout=300)
        finally:
            if a2.poll() is None:
                a2.kill()
                a2.communicate()
        a2_took = time.monotonic() - started
        time.sleep(5)  # what comes after the failed deploy is still answered by v1
    b_answer = get(wisp.url("fault-b--hello")).text
    left = wait_gone(wisp, "fault-a", 2)
    print(f"\n[figures] B's deploy took {b_took:.1f} s (A v2 still deploying when B was done: "
          f"{a2_pending_when_b_done}); A v2's deploy took {a2_took:.1f} s, exit {a2.returncode}; "
          f"A's requests: {client.figures()}; v2 processes left: {len(left)}")

    assert b.returncode == 0, b.stdout + b.stderr
    assert b_answer == '"b"'
    assert a2_pending_when_b_done, f"B's deploy waited for A's ({b_took:.1f} s)"
    assert_refused_and_v1_served(a2.returncode, a2_output, "did not finish within startup_timeout=10 s", client, left)
    assert get(url).json() == "v1"


def test_a_warm_pool_whose_enter_hook_raises_fails_its_deploy_and_the_old_version_serves(
        wisp: Wisp, tmp_path: Path) -> None:
    url = deploy_and_check(wisp, place(tmp_path, "warm_v1.py", "w1"), "fault-warm--model-version", "v1")
    with Client(url, "v1") as client:
        wait_until(lambda: client.answered >= 5, timeout=60, message="the client loop to get answers from v1")
        failed = wisp.run("deploy", str(place(tmp_path, "warm_enter_fails.py", "w2")), check=False, timeout=300)
        time.sleep(2)
    left = wait_gone(wisp, "fault-warm", 2)
    print(f"\n[figures] warm-pool deploy exit {failed.returncode}; requests: {client.figures()}; "
          f"v2 processes left: {len(left)}")
    assert_refused_and_v1_served(failed.returncode, failed.stdout + failed.stderr,
                                 "RuntimeError: MODEL_PATH is not set on this server", client, left)
    assert get(url).json() == "v1"
    wisp.run("app", "stop", "fault-warm")


def test_the_clis_own_import_of_a_script_has_a_timeout(wisp: Wisp, tmp_path: Path) -> None:
    script = place(tmp_path, "import_hangs.py", "hangs")
    env = {**wisp.env, "WISP_IMPORT_TIMEOUT": "3"}
    started = time.monotonic()
    try:
        proc = subprocess.run([*WISP, "deploy", str(script)], env=env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        wait_until(lambda: not processes_in_group(str(script.parent)), timeout=10,
                   message="the CLI's import of the script to be stopped")
    finally:
        for line in processes_in_group(str(script.parent)):  # the inspector we started, if it was left
            os.kill(int(line.split()[0]), signal.SIGKILL)
    print(f"\n[figures] the CLI gave up on the import after {took:.1f} s, exit {proc.returncode}")
    assert proc.returncode != 0
    assert f"{script.name} did not finish importing within 3 s" in proc.stderr, proc.stderr
    assert "WISP_IMPORT_TIMEOUT" in proc.stderr


def test_a_request_waiting_on_an_import_that_hangs_after_a_restart_gets_a_503_with_the_reason(
        own_wisp: Wisp, tmp_path: Path) -> None:
    wisp = own_wisp
    url = deploy_and_check(wisp, place(tmp_path, "hangs_after_restart.py", "r"), "fault-restart--hello", "ok")
    wisp.run("server", "stop")
    (wisp.home / "apps/fault-restart/v1/hang").touch()  # beside the deployed copy of the script
    wisp.run("server", "start")
    started = time.monotonic()
    r = get(url, timeout=120)  # the restored version is routed while its zygote imports
    took = time.monotonic() - started
    left = wait_gone(wisp, "fault-restart", 1)
    print(f"\n[figures] the first request after the restart answered {r.status_code} after {took:.1f} s; "
          f"processes of the version left: {len(left)}")
    assert r.status_code == 503, r.text
    assert "importing the script did not finish within startup_timeout=5 s" in r.json()["error"], r.text
    assert not left, left


def test_a_serve_edit_that_cannot_become_ready_keeps_the_previous_version_serving(wisp: Wisp, tmp_path: Path) -> None:
    script = place(tmp_path, "deploy_a.py", "s")
    url = wisp.url("fault-a--hello-dev")
    with wisp.serve(script) as serve:
        serve.wait_for("Watching", timeout=300)
        assert get(url).json() == "v1"
        with Client(url, "v1") as client:
            mark = len(serve.lines)
            shutil.copy(APPS / "deploy_a_hangs.py", script)  # the edit: its import hangs in the server only
            serve.wait_for("The previous version keeps serving", start=mark, timeout=120)
            time.sleep(2)
        output = "".join(serve.lines[mark:])
        left = wait_gone(wisp, "fault-a-dev", 2)
        print(f"\n[figures] serve's broken edit: requests {client.figures()}; v2 processes left: {len(left)}")
        assert "did not finish within startup_timeout=10 s" in output, output
        assert client.sent > 5 and not client.lost and client.answered == client.sent, client.figures()
        assert not left, left
        assert get(url).json() == "v1"

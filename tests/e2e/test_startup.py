"""Starting the server from many CLIs at once, while it stops, and slow deploys under `serve`
(issue 10, defects 1 and 2)."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import WISP, Wisp, free_port, get

pytestmark = pytest.mark.e2e
APPS = Path(__file__).parent / "apps"

SCRIPT = """
import wisp

stub = wisp.Stub("par{n}")


@stub.webhook
def hello():
    return {n}
"""


def test_six_serves_at_once_on_a_new_home_share_one_server(tmp_path: Path) -> None:
    wisp = Wisp(tmp_path / "home", free_port())
    scripts = []
    for n in range(6):
        folder = tmp_path / f"app{n}"
        folder.mkdir()
        (folder / "app.py").write_text(SCRIPT.format(n=n))
        scripts.append(folder / "app.py")
    procs = [wisp.serve(script) for script in scripts]
    try:
        for proc in procs:
            proc.wait_for("Watching", timeout=300)
        for n in range(6):
            assert get(wisp.url(f"par{n}--hello-dev")).json() == n
        started = [p for p in procs if "Started the wisp server" in p.output]
        assert len(started) == 1, [p.output for p in procs]
        assert not any("in use" in p.output for p in procs)
        # The one that started the server stops first: the server stays for the others.
        first = started[0]
        assert first.stop() == 0
        others = [p for p in procs if p is not first]
        assert get(wisp.url(f"par{procs.index(others[0])}--hello-dev")).status_code == 200
    finally:
        for proc in procs:
            proc.stop()
        wisp.run("server", "stop", check=False)


def test_a_deploy_started_while_the_server_stops_gets_a_server(tmp_path: Path) -> None:
    wisp = Wisp(tmp_path / "home", free_port())
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "app.py").write_text(SCRIPT.format(n=7))
    wisp.run("server", "start")
    stopping = threading.Thread(target=lambda: wisp.run("server", "stop"))
    stopping.start()
    time.sleep(0.05)
    try:
        out = wisp.run("deploy", str(folder / "app.py"))
        stopping.join(60)
        assert "in use" not in out.stdout + out.stderr
        assert get(wisp.url("par7--hello")).json() == 7
    finally:
        stopping.join(60)
        wisp.run("server", "stop", check=False)


def test_a_second_server_on_the_same_home_refuses_and_says_so(tmp_path: Path) -> None:
    wisp = Wisp(tmp_path / "home", free_port())
    wisp.run("server", "start")
    try:
        proc = subprocess.run([*WISP[:1], "-m", "wisp.server", "--home", str(wisp.home), "--port", str(free_port())],
                              env=wisp.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert "Another wisp server is running" in proc.stderr
    finally:
        wisp.run("server", "stop", check=False)


def test_serve_keeps_an_app_whose_deploy_outlasted_the_heartbeat_window(tmp_path: Path) -> None:
    wisp = Wisp(tmp_path / "home", free_port())
    shutil.copy(APPS / "slow_import.py", tmp_path / "slow_import.py")
    with wisp.serve(tmp_path / "slow_import.py") as proc:
        proc.wait_for("Watching", timeout=300)
        time.sleep(3)  # a few server ticks: the stale heartbeat used to stop the app here
        assert get(wisp.url("slow-import--hello-dev")).json() == "still here"
        assert "stopped sending heartbeats" not in proc.output
        assert proc.proc.poll() is None
    wisp.run("server", "stop", check=False)


def test_an_image_with_fastapi_standard_serves_from_a_forked_container(tmp_path: Path) -> None:
    """Its uvicorn prints a DeprecationWarning while the image zygote preloads; the server used to
    wait for the end of that output for ever, so no function zygote and no container came up."""
    from .conftest import processes_in_group

    wisp = Wisp(tmp_path / "home", free_port())
    shutil.copy(APPS / "fastapi_standard.py", tmp_path / "fastapi_standard.py")
    with wisp.serve(tmp_path / "fastapi_standard.py") as proc:
        proc.wait_for("Watching", timeout=300)
        assert get(wisp.url("fastapi-standard--hello-dev", "/?name=modal"), timeout=60).json() == {"hello": "modal"}
        time.sleep(3)
        assert get(wisp.url("fastapi-standard--hello-dev")).json() == {"hello": "world"}
        assert "stopped sending heartbeats" not in proc.output
        assert any("wisp._runtime.zygote" in p for p in processes_in_group(str(wisp.home / "apps")))
    wisp.run("server", "stop", check=False)

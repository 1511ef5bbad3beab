"""Calls between functions (issue 10, point 4): `.remote`, `.remote_gen`, `.map`, `.spawn`,
`FunctionCall`, from containers, from `with app.run():` and `wisp run`, durable spawned calls."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import Wisp, admin, get, post, start_wisp, wait_until

pytestmark = pytest.mark.e2e
APPS = Path(__file__).parent / "apps"
FILES = ("calls_app.py", "calls_driver.py", "modal_compat.py")


def copy_app(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(APPS / name, folder / name)
    return folder / "calls_app.py"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Wisp, Path]]:
    root = tmp_path_factory.mktemp("calls")
    wisp = start_wisp(root / "home")
    script = copy_app(root / "src")
    wisp.run("deploy", str(script))
    yield wisp, script
    wisp.run("server", "stop", check=False)


def test_a_web_endpoint_calls_backend_functions(deployed: tuple[Wisp, Path]) -> None:
    wisp, _ = deployed
    assert get(wisp.url("calls--front", "/?x=5")).json() == {"square": 25, "sum": 6}


def test_a_web_endpoint_streams_remote_gen_and_map_results(deployed: tuple[Wisp, Path]) -> None:
    wisp, _ = deployed
    with requests.get(wisp.url("calls--stream", "/?n=4"), stream=True, timeout=120) as resp:
        lines = [line.decode() for line in resp.iter_lines() if line]
    assert lines == ["gen 0", "gen 1", "gen 2", "gen 3", "map 0", "map 1", "map 4", "map 9"]


def test_called_functions_have_no_url_and_refuse_callers_without_the_apps_token(deployed: tuple[Wisp, Path]) -> None:
    from wisp._urls import call_label

    wisp, _ = deployed
    resp = post(wisp.url(call_label("calls", "square")), data=b"x")
    assert resp.status_code == 401
    assert "call token" in resp.json()["error"]
    resp = post(wisp.url(call_label("calls", "square")), data=b"x", headers={"x-wisp-call-token": "guess"})
    assert resp.status_code == 401
    listed = get(wisp.url("no-such-label")).json()["labels"]
    assert not [label for label in listed if label.startswith("_")]
    apps = json.loads(admin(wisp, "/v1/apps")[1])["apps"]
    calls = next(a for a in apps if a["id"] == "calls")
    assert "square" in {f["function"] for f in calls["functions"]}
    assert "call_token" not in json.dumps(apps)


def test_a_spawned_call_is_polled_by_a_later_request_across_a_redeploy(deployed: tuple[Wisp, Path]) -> None:
    wisp, script = deployed
    call_id = post(wisp.url("calls--start"), json={"seconds": 2}).json()["call_id"]
    assert get(wisp.url("calls--poll", f"/?call_id={call_id}")).status_code == 202
    script.write_text(script.read_text() + "\n# redeployed\n")
    wisp.run("deploy", str(script))
    done = wait_until(lambda: (r := get(wisp.url("calls--poll", f"/?call_id={call_id}"))).status_code == 200 and r,
                      timeout=60, message="the spawned call's result")
    assert done.json() == {"result": "slept 2"}


def test_every_calling_form_from_the_users_own_process(deployed: tuple[Wisp, Path]) -> None:
    wisp, script = deployed
    proc = subprocess.run([sys.executable, str(script.parent / "calls_driver.py")], env=wisp.env, capture_output=True,
                          text=True, timeout=300, cwd=script.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["remote"] == 49 and out["kwargs"] == 42 and out["local"] == 25
    assert out["gen"] == [0, 1, 2, 3]
    assert out["map"] == [i * i for i in range(300)]
    assert out["starmap"] == [3, 7]
    assert out["unordered"] == [i * i for i in range(20)]
    assert out["map_exceptions"] == ["ValueError", "ValueError"]
    assert out["boom"]["raised"] == "ValueError" and out["boom"]["message"] == "bad input"
    assert "remote traceback" in out["boom"]["text"] and 'in boom' in out["boom"]["text"]
    assert out["crash"]["raised"] == "ExecutionError"
    assert out["flaky"] == {"value": "recovered"}  # its first container crashed; retries= ran it again
    assert out["gen_on_remote"]["raised"] == "ExecutionError" and "remote_gen" in out["gen_on_remote"]["message"]
    assert out["pending"]["raised"] == "TimeoutError"
    assert out["spawned"] == "slept 0.5"
    assert out["cancelled"]["raised"] == "InputCancellation"
    assert out["missing"]["raised"] == "NotFoundError"
    assert out["aio"] == {"remote": 81, "gen": [0, 1, 2], "map": [1, 4]}
    assert out["outside"]["raised"] == "ExecutionError" and "stub.run()" in out["outside"]["message"]


def test_wisp_run_runs_the_local_entrypoint_and_stops_its_app(deployed: tuple[Wisp, Path]) -> None:
    wisp, script = deployed
    out = wisp.run("run", str(script), "--x", "4").stdout
    assert "square 16" in out and "map [0, 1, 4, 9]" in out
    apps = json.loads(admin(wisp, "/v1/apps")[1])["apps"]
    assert all(a["state"] == "stopped" for a in apps if a["mode"] == "run")
    assert "7" in wisp.run("run", f"{script}::add", "--a", "3", "--b", "4").stdout


def test_spawned_calls_and_results_survive_a_server_restart(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home")
    try:
        wisp.run("deploy", str(copy_app(tmp_path / "src")))
        finished = post(wisp.url("calls--start"), json={"seconds": 0.1}).json()["call_id"]
        wait_until(lambda: get(wisp.url("calls--poll", f"/?call_id={finished}")).status_code == 200, timeout=60,
                   message="the first call to end")
        running = post(wisp.url("calls--start"), json={"seconds": 3}).json()["call_id"]
        time.sleep(0.5)
        wisp.run("server", "stop")
        wisp.run("server", "start")
        assert get(wisp.url("calls--poll", f"/?call_id={finished}")).json() == {"result": "slept 0.1"}
        done = wait_until(lambda: (r := get(wisp.url("calls--poll", f"/?call_id={running}"))).status_code == 200 and r,
                          timeout=90, message="the interrupted call to run again and end")
        assert done.json() == {"result": "slept 3"}
    finally:
        wisp.run("server", "stop", check=False)

"""`wisp deploy`, `wisp app ...` and `wisp server ...`: persistent apps (issue 2, point 6)."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import requests

from .conftest import REPO, Wisp, get, processes_in_group, wait_until

pytestmark = pytest.mark.e2e

SCRIPT = """
import wisp

stub = wisp.Stub("{name}")


@stub.webhook
def version():
    return {{"version": {version}}}
"""


def write(folder: Path, name: str, version: int) -> Path:
    folder.mkdir(exist_ok=True)
    script = folder / "deployed.py"
    script.write_text(SCRIPT.format(name=name, version=version))
    return script


def test_deploy_again_replaces_code_without_failed_requests(wisp: Wisp, tmp_path: Path) -> None:
    script = write(tmp_path / "src", "steady", 1)
    out = wisp.run("deploy", str(script)).stdout
    assert f"http://steady--version.localhost:{wisp.port}/" in out
    assert f"http://127.0.0.1:{wisp.port}/steady--version/" in out
    url = wisp.url("steady--version")
    assert get(url).json() == {"version": 1}

    statuses: list[int] = []
    versions: set[int] = set()
    stop = threading.Event()

    def hammer() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                r = session.get(url, timeout=60)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["version"])

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        for version in (2, 3):
            write(tmp_path / "src", "steady", version)
            wisp.run("deploy", str(script))
        wait_until(lambda: 3 in versions, timeout=30, message="version 3 served")
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests, statuses {set(statuses)}"
    assert 1 in versions and 3 in versions
    # editing the files after deploy changes nothing until the next deploy
    write(tmp_path / "src", "steady", 99)
    assert get(url).json() == {"version": 3}


def test_app_list_logs_and_stop(wisp: Wisp, tmp_path: Path) -> None:
    shutil.copy(REPO / "tests/e2e/apps/behaviours.py", tmp_path / "behaviours.py")
    wisp.run("deploy", str(tmp_path / "behaviours.py"))
    assert get(wisp.url("behaviours--pid")).status_code == 200
    listing = wisp.run("app", "list").stdout
    assert "behaviours  running  deploy" in listing
    assert f"http://behaviours--pid.localhost:{wisp.port}/" in listing

    r = get(wisp.url("behaviours--boom"))
    assert r.status_code == 500
    assert r.json()["error"] == "internal_error"
    assert "secret detail" not in r.text and "Traceback" not in r.text
    logs = wait_until(lambda: (lambda t: t if "secret detail" in t else None)(wisp.run("app", "logs", "behaviours").stdout),
                      timeout=10, message="traceback in logs")
    assert "Traceback" in logs and "ValueError" in logs

    assert "Stopped app behaviours" in wisp.run("app", "stop", "behaviours").stdout
    assert get(wisp.url("behaviours--pid")).status_code == 404
    assert "behaviours  stopped" in wisp.run("app", "list").stdout
    assert not processes_in_group(f"{wisp.home}/apps/behaviours/")
    missing = wisp.run("app", "stop", "no-such-app", check=False)
    assert missing.returncode == 1 and "No app named" in missing.stderr


def test_failed_image_build_keeps_previous_version(wisp: Wisp, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    script = write(folder, "imagefail", 1)
    wisp.run("deploy", str(script))
    (folder / "deployed.py").write_text(
        SCRIPT.format(name="imagefail", version=2).replace(
            "@stub.webhook", '@stub.webhook(image=wisp.Image.debian_slim().pip_install("wisp-no-such-package-xyz-0123"))'
        )
    )
    proc = wisp.run("deploy", str(script), check=False)
    assert proc.returncode == 1
    assert "wisp-no-such-package-xyz-0123" in proc.stderr
    assert "pip_install" in proc.stderr  # names the failing step
    assert get(wisp.url("imagefail--version")).json() == {"version": 1}


def test_server_restart_brings_deployed_apps_back(own_wisp: Wisp, tmp_path: Path) -> None:
    script = write(tmp_path / "src", "survivor", 5)
    own_wisp.run("deploy", str(script))
    assert get(own_wisp.url("survivor--version")).json() == {"version": 5}
    status = own_wisp.run("server", "status").stdout
    assert "1 app(s) running" in status
    own_wisp.run("server", "stop")
    assert own_wisp.run("server", "status", check=False).returncode == 1
    assert not processes_in_group(str(own_wisp.home))
    own_wisp.run("server", "start")
    assert get(own_wisp.url("survivor--version")).json() == {"version": 5}


def test_a_deploy_put_to_another_apps_path_is_refused(wisp: Wisp) -> None:
    import base64
    import json

    info = json.loads((wisp.home / "server.json").read_text())
    token = (wisp.home / "token").read_text().strip()
    spec = {"name": "mine", "module": "mine", "stub_attr": "stub", "functions": []}
    body = {"spec": spec, "mode": "deploy", "files": base64.b64encode(b"").decode()}
    response = requests.put(f"http://127.0.0.1:{info['admin_port']}/v1/apps/theirs", json=body,
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 400
    assert "PUT it to /v1/apps/mine" in response.json()["error"]
    assert "theirs" not in wisp.run("app", "list").stdout and "mine " not in wisp.run("app", "list").stdout

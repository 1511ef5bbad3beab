"""Containers on demand, idle stop, warm pools, crashes and request limits (issue 2, 8 and 11)."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, Wisp, get, host_pid, post, server_with, wait_until

pytestmark = pytest.mark.e2e
APP = "containers"


@pytest.fixture(scope="module")
def deployed(wisp: Wisp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    folder = tmp_path_factory.mktemp("containers")
    source = (REPO / "tests/e2e/apps/behaviours.py").read_text().replace('"behaviours"', f'"{APP}"')
    (folder / "behaviours.py").write_text(source)
    wisp.run("deploy", str(folder / "behaviours.py"))
    yield wisp
    wisp.run("app", "stop", APP, check=False)


def status(wisp: Wisp, function: str) -> dict[str, object]:
    import json
    import urllib.request

    info = json.loads((wisp.home / "server.json").read_text())
    token = (wisp.home / "token").read_text().strip()
    req = urllib.request.Request(f"http://127.0.0.1:{info['admin_port']}/v1/apps",
                                 headers={"Authorization": f"Bearer {token}"})
    apps = json.loads(urllib.request.urlopen(req).read())["apps"]
    app = next(a for a in apps if a["id"] == APP)
    return next(e for e in app["endpoints"] if e["function"] == function)


def test_first_request_starts_a_container_and_later_ones_reuse_it(deployed: Wisp) -> None:
    first = get(deployed.url(f"{APP}--pid")).json()
    second = get(deployed.url(f"{APP}--pid")).json()
    assert first["pid"] == second["pid"]
    assert host_pid(first["pid"]) not in (None, os.getpid())  # a live process of its own
    assert status(deployed, "pid")["containers"] == {"ready": 1}


def test_overlapping_requests_start_more_containers(deployed: Wisp) -> None:
    results: list[dict[str, object]] = []
    threads = [threading.Thread(target=lambda: results.append(get(deployed.url(f"{APP}--slow", "/?seconds=2")).json()))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 3
    assert len({r["pid"] for r in results}) == 3  # one request at a time per container


def test_idle_container_stops_after_its_timeout(deployed: Wisp) -> None:
    first = get(deployed.url(f"{APP}--short-lived")).json()["pid"]
    wait_until(lambda: not status(deployed, "short_lived")["containers"], timeout=20, message="idle stop")
    assert host_pid(first) is None  # the process is gone, not just unlisted
    assert get(deployed.url(f"{APP}--short-lived")).json()["pid"] != first  # a fresh cold start


def test_keep_warm_keeps_n_started_containers(deployed: Wisp) -> None:
    wait_until(lambda: status(deployed, "warm")["containers"] == {"ready": 3}, timeout=60, message="3 warm")


def test_crash_mid_request_is_502_and_next_request_gets_a_fresh_container(deployed: Wisp) -> None:
    r = get(deployed.url(f"{APP}--die"))
    assert r.status_code == 502
    assert "error" in r.json()
    r2 = get(deployed.url(f"{APP}--die", "/?exit=false"))
    assert r2.status_code == 200
    logs = deployed.run("app", "logs", APP).stdout
    died = logs.split("about to die: ")[1].split()[0]
    assert r2.json()["pid"] != died


def test_root_path_for_path_and_host_routing(deployed: Wisp) -> None:
    by_path = get(deployed.url(f"{APP}--root", "/")).json()
    assert by_path["root_path"] == f"/{APP}--root"
    assert by_path["url"] == f"http://127.0.0.1:{deployed.port}/{APP}--root/"
    host = f"{APP}--root.localhost:{deployed.port}"
    by_host = get(f"http://127.0.0.1:{deployed.port}/", headers={"Host": host}).json()
    assert by_host["root_path"] == ""
    assert by_host["host"] == host


def test_streamed_body_reaches_container(deployed: Wisp) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"x" * 65536

    r = post(deployed.url(f"{APP}--size"), data=chunks())  # chunked transfer encoding
    assert r.json() == {"bytes": 64 * 65536}


def test_body_over_limit_is_413(tmp_path: Path) -> None:
    with server_with(tmp_path, REPO / "tests/e2e/apps/behaviours.py", WISP_MAX_BODY_SIZE="1000") as small:
        assert post(small.url("behaviours--size"), data=b"y" * 999).json() == {"bytes": 999}
        r = post(small.url("behaviours--size"), data=b"y" * 5000)
        assert r.status_code == 413


def test_container_that_fails_to_start_gives_503_with_the_reason(deployed: Wisp) -> None:
    r = get(deployed.url(f"{APP}--broken-factory", "/"))
    assert r.status_code == 503
    assert "RuntimeError: factory broke inside the container" in r.json()["error"]
    assert "wisp app logs" in r.json()["error"]
    assert get(deployed.url(f"{APP}--pid")).status_code == 200  # the app's other functions serve on


def test_wsgi_script_name_for_path_routing(deployed: Wisp) -> None:
    label = f"{APP}--flask-links"
    by_path = get(deployed.url(label, "/page")).json()
    assert by_path == {"script_root": f"/{label}", "path": "/page", "link": f"/{label}/page"}
    host = f"{label}.localhost:{deployed.port}"
    by_host = get(f"http://127.0.0.1:{deployed.port}/page", headers={"Host": host}).json()
    assert by_host == {"script_root": "", "path": "/page", "link": "/page"}

"""The autoscaler and activator with real containers (issue 3)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import REPO, Wisp, admin, get, host_pid, server_with, wait_until

pytestmark = pytest.mark.e2e
APP = "scaling"


def endpoint(wisp: Wisp, function: str) -> dict[str, object]:
    apps = json.loads(admin(wisp, "/v1/apps")[1])["apps"]
    app = next(a for a in apps if a["id"] == APP)
    return next(e for e in app["endpoints"] if e["function"] == function)


def serving(wisp: Wisp, function: str) -> int:
    states = endpoint(wisp, function)["containers"]
    return states.get("ready", 0) + states.get("busy", 0)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def scaling(wisp: Wisp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Wisp, Path]]:
    folder = tmp_path_factory.mktemp("scaling")
    shutil.copy(REPO / "tests/e2e/apps/scaling.py", folder / "scaling.py")
    wisp.run("deploy", str(folder / "scaling.py"))
    yield wisp, folder
    wisp.run("app", "stop", APP, check=False)


def test_burst_of_32_one_second_requests_gets_32_containers(scaling: tuple[Wisp, Path]) -> None:
    wisp, _ = scaling
    url = wisp.url(f"{APP}--burst", "/?seconds=1")
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda _: requests.get(url, timeout=180), range(32)))
    assert [r.status_code for r in responses] == [200] * 32
    # Every request got a container of its own started for it; a request may still be served
    # by an earlier container that became free first (the activator hands out the first slot).
    assert serving(wisp, "burst") == 32
    assert len({r.json()["pid"] for r in responses}) >= 16


def test_keep_warm_pool_is_there_without_traffic_and_never_expires(scaling: tuple[Wisp, Path]) -> None:
    wisp, _ = scaling
    wait_until(lambda: serving(wisp, "warm") == 2, timeout=60, message="2 warm containers")
    pids = {get(wisp.url(f"{APP}--warm")).json()["pid"] for _ in range(4)}
    threading.Event().wait(4)  # twice the idle window: warm containers must not expire
    assert serving(wisp, "warm") == 2
    assert pids <= {get(wisp.url(f"{APP}--warm")).json()["pid"] for _ in range(8)} | pids


def test_killed_warm_container_is_noticed_and_replaced(scaling: tuple[Wisp, Path]) -> None:
    wisp, _ = scaling
    wait_until(lambda: serving(wisp, "warm") == 2, timeout=60, message="2 warm containers")
    victim = get(wisp.url(f"{APP}--warm")).json()["pid"]
    pid = host_pid(victim)
    assert pid is not None, victim
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: "exited while serving (code -9)" in wisp.run("app", "logs", APP).stdout, timeout=5,
               interval=0.2, message="the death noticed")
    wait_until(lambda: serving(wisp, "warm") == 2, timeout=60, message="a replacement")
    assert victim not in {get(wisp.url(f"{APP}--warm")).json()["pid"] for _ in range(6)}


def test_concurrent_inputs_share_one_container(scaling: tuple[Wisp, Path]) -> None:
    wisp, _ = scaling
    url = wisp.url(f"{APP}--shared", "/?seconds=1")
    get(url.replace("seconds=1", "seconds=0"))  # one warm container
    with ThreadPoolExecutor(4) as pool:
        pids = {r.json()["pid"] for r in pool.map(lambda _: requests.get(url, timeout=60), range(4))}
    assert len(pids) == 1
    assert serving(wisp, "shared") == 1


def test_thousand_requests_over_a_redeploy_and_a_scale_down_all_succeed(scaling: tuple[Wisp, Path]) -> None:
    wisp, folder = scaling
    url = wisp.url(f"{APP}--work", "/?seconds=0.05")
    statuses: list[int] = []
    versions: set[int] = set()
    done = threading.Event()

    def worker(count: int) -> None:
        with requests.Session() as session:
            for i in range(count):
                if i == count - 20:  # the last requests of each worker come after the switch
                    done.wait(120)
                r = session.get(url, timeout=120)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["version"])

    def redeploy() -> None:
        wait_until(lambda: len(statuses) >= 200, timeout=120, message="200 requests before redeploying")
        script = folder / "scaling.py"
        script.write_text(script.read_text().replace("VERSION = 1", "VERSION = 2"))
        wisp.run("deploy", str(script))
        done.set()

    # 8 workers with different quotas: the load falls from 8 in flight to 0 while they finish
    quotas = [90 + 10 * i for i in range(8)]
    assert sum(quotas) == 1000
    threads = [threading.Thread(target=worker, args=(q,)) for q in quotas] + [threading.Thread(target=redeploy)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert done.is_set()
    assert len(statuses) == 1000
    assert statuses.count(200) == 1000, {s: statuses.count(s) for s in set(statuses)}
    assert versions == {1, 2}
    wait_until(lambda: endpoint(wisp, "work")["containers"] == {}, timeout=30, message="scaled to zero")


def test_function_that_never_starts_is_shown_failed(scaling: tuple[Wisp, Path]) -> None:
    wisp, _ = scaling
    for _ in range(3):
        r = get(wisp.url(f"{APP}--never-starts"))
        assert r.status_code == 503
        assert "this factory always fails" in r.json()["error"]
    listing = wisp.run("app", "list").stdout
    assert "FAILED" in listing and "this factory always fails" in listing


def test_metrics_on_the_admin_address(scaling: tuple[Wisp, Path]) -> None:
    wisp, _ = scaling
    get(wisp.url(f"{APP}--warm"))
    status, text = admin(wisp, "/metrics")
    assert status == 200
    assert f'wisp_requests_total{{app="{APP}",function="warm",status="200"}}' in text
    assert f'wisp_cold_start_seconds_count{{app="{APP}",function="warm"}}' in text
    assert f'wisp_containers{{app="{APP}",function="warm",state="ready"}}' in text
    assert "wisp_queue_wait_seconds_bucket" in text
    assert admin(wisp, "/metrics", token=False)[0] == 401
    assert get(wisp.url(f"{APP}--warm", "/metrics")).status_code == 404  # not on app URLs


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    with server_with(tmp_path, REPO / "tests/e2e/apps/scaling.py", WISP_MAX_QUEUE="2") as small:
        url = small.url(f"{APP}--single", "/?seconds=3")
        get(url.replace("seconds=3", "seconds=0"))  # the one container it may have is up
        with ThreadPoolExecutor(5) as pool:
            responses = list(pool.map(lambda _: requests.get(url, timeout=120), range(5)))
        rejected = [r for r in responses if r.status_code == 503]
        assert sorted(r.status_code for r in responses) == [200, 200, 200, 503, 503]
        assert all(r.headers["Retry-After"] for r in rejected)
        assert "waiting" in rejected[0].json()["error"]


def test_enter_past_startup_timeout_fails_the_container_with_the_reason(scaling: tuple[Wisp, Path]) -> None:
    wisp, _ = scaling
    r = get(wisp.url(f"{APP}--sleepy-hello"))
    assert r.status_code == 503
    assert "startup_timeout=2" in r.json()["error"]
    wait_until(lambda: endpoint(wisp, "Sleepy.hello")["containers"] == {}, timeout=15, message="killed")
    for _ in range(30):  # nobody is waiting: no restarts for a request that already got its answer
        assert endpoint(wisp, "Sleepy.hello")["containers"] == {}
        threading.Event().wait(0.1)

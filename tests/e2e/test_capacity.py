"""The capacity rule on one machine (issue 15, point 3): running containers' `cpu=` reservations
never exceed the cores (WISP_CPU_LIMIT=1 here); requests beyond them wait for a container rather
than starting more; an idle container of another function gives up its room; a function that
could never fit gets a 503 saying why."""
from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import Wisp, admin, get, server_with, wait_until

pytestmark = pytest.mark.e2e
APP = Path(__file__).parent / "apps" / "capacity.py"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    with server_with(tmp_path_factory.mktemp("capacity"), APP, WISP_CPU_LIMIT="1") as wisp:
        yield wisp


def local_node(wisp: Wisp) -> dict[str, object]:
    (node,) = json.loads(admin(wisp, "/v1/nodes")[1])["nodes"]
    return node  # type: ignore[no-any-return]  # JSON


def test_requests_beyond_the_cores_wait_for_a_container(full: Wisp) -> None:
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: requests.get(full.url("capacity--half", "/?seconds=1"), timeout=120),
                                range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert len({a.json()["pid"] for a in answers}) <= 2  # 2 x 0.5 CPU on 1 core: never a third
    assert local_node(full)["reserved_cpu"] <= 1.0
    out = full.run("node", "list").stdout
    assert out.splitlines()[1].split()[:2] == ["local", "up"], out


def test_an_idle_container_of_another_function_makes_room(full: Wisp) -> None:
    wait_until(lambda: local_node(full)["containers"] == 0, timeout=60, message="half scaled down")
    with ThreadPoolExecutor(2) as pool:  # two of `hold` take the whole core, then idle (for a minute)
        list(pool.map(lambda _: get(full.url("capacity--hold", "/?seconds=0.5")), range(2)))
    answer = requests.get(full.url("capacity--other"), timeout=60)  # no room but an idle container's (after 2 s)
    assert answer.status_code == 200, answer.text
    assert "stopped to make room for another function" in full.run("app", "logs", "capacity").stdout


def test_a_function_that_could_never_fit_gets_a_503_saying_why(full: Wisp) -> None:
    answer = requests.get(full.url("capacity--huge"), timeout=60)
    assert answer.status_code == 503
    assert "more than any node has" in answer.text and "WISP_CPU_LIMIT" in answer.text, answer.text


def test_a_container_handed_a_request_ahead_still_runs_one_at_a_time(full: Wisp) -> None:
    # Two containers of `quick` fill the core; short requests beyond them are handed to a busy
    # container ahead (autoscaler.standby_slots), where they wait on the agent's gate.
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: requests.get(full.url("capacity--quick"), timeout=120), range(300)))
    assert [a.status_code for a in answers] == [200] * 300, {a.text for a in answers if a.status_code != 200}
    assert max(a.json()["running"] for a in answers) == 1
    assert len({a.json()["pid"] for a in answers}) <= 2


def test_a_plain_def_endpoint_may_run_its_own_event_loop(full: Wisp) -> None:
    answer = requests.get(full.url("capacity--nested", "/?x=6"), timeout=60)
    assert answer.status_code == 200 and answer.json() == {"value": 42}, answer.text

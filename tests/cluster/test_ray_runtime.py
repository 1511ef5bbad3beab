"""wisp on a real two-node Ray cluster (issue 14): containers spread over the nodes, `cpu=`
reservations cap them per node, and a redeploy, a drained node and a killed node lose nothing
but the requests in flight on the killed node. The tests run in order on one cluster: the
drained node stays drained, and the killed node is one the last test adds."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from e2e.conftest import admin, wait_until

from .conftest import RayCluster

APPS = Path(__file__).parent / "apps"
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"


def nodes(cluster: RayCluster) -> dict[str, dict[str, Any]]:
    status, text = admin(cluster.wisp, "/v1/nodes")
    assert status == 200, text
    return {n["name"]: n for n in json.loads(text)["nodes"]}


def ready_containers(cluster: RayCluster) -> int:
    _, text = admin(cluster.wisp, "/v1/apps")
    (app,) = [a for a in json.loads(text)["apps"] if a["name"] == "spread"]
    states = app["endpoints"][0]["containers"]
    return int(states.get("ready", 0)) + int(states.get("busy", 0))


def logs(cluster: RayCluster) -> str:
    """The app's log and the server's, for a failure's message (also in test-artifacts/)."""
    text = cluster.wisp.run("app", "logs", "spread", check=False).stdout + (cluster.wisp.home / "server.log").read_text()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "cluster-spread.log").write_text(text)
    return text[-3000:]


def ask(cluster: RayCluster, ms: int) -> tuple[int, dict[str, Any] | str]:
    try:
        answer = requests.get(cluster.wisp.url("spread--where"), params={"ms": ms}, timeout=120)
    except requests.RequestException as exc:
        return 0, repr(exc)
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, answer.text


def burst(cluster: RayCluster, count: int, ms: int) -> list[tuple[int, dict[str, Any] | str]]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: ask(cluster, ms), range(count)))


class Load:
    """`workers` clients asking in a loop until stopped (bounded by `limit` seconds)."""

    def __init__(self, cluster: RayCluster, workers: int, ms: int, limit: float = 120.0) -> None:
        self.answers: list[tuple[float, int, dict[str, Any] | str]] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit
        self._threads = [threading.Thread(target=self._run, args=(cluster, ms)) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def _run(self, cluster: RayCluster, ms: int) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            sent = time.monotonic()
            status, body = ask(cluster, ms)
            self.answers.append((sent, status, body))

    def stop(self) -> list[tuple[float, int, dict[str, Any] | str]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)
        return self.answers

    def seen(self, predicate: Any) -> bool:
        return any(status == 200 and isinstance(body, dict) and predicate(body) for _, status, body in list(self.answers))


@pytest.fixture(scope="module")
def deployed(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spread")
    script = folder / "spread.py"
    shutil.copy(APPS / "spread.py", script)
    ray_cluster.wisp.run("deploy", str(script))
    return script


def test_both_nodes_are_listed_with_ray_s_totals(ray_cluster: RayCluster) -> None:
    listed = nodes(ray_cluster)
    assert len(listed) == 2, listed
    assert all(n["state"] == "up" and n["cpu"] == 1 and n["address"] == "127.0.0.1" for n in listed.values()), listed
    out = ray_cluster.wisp.run("node", "list").stdout
    assert all(name in out for name in listed), out


def test_a_burst_spreads_containers_over_both_nodes(ray_cluster: RayCluster, deployed: Path) -> None:
    answers = burst(ray_cluster, 4, 1500)
    assert all(status == 200 for status, _ in answers), answers
    # Placed on both (a node still building its image serves a moment later than the other)...
    listed = nodes(ray_cluster)
    assert all(n["containers"] >= 1 for n in listed.values()), (listed, answers, logs(ray_cluster))
    # ...and, once ready (a node may still be building its image), both serve; each container
    # knows its node (WISP_NODE).
    wait_until(lambda: ready_containers(ray_cluster) >= 4, timeout=120, message="4 containers ready")
    answers = burst(ray_cluster, 4, 1000)
    assert {body["node"] for _, body in answers if isinstance(body, dict)} == set(listed), (answers, logs(ray_cluster))


def test_cpu_reservations_cap_containers_per_node(ray_cluster: RayCluster, deployed: Path) -> None:
    # cpu=0.5 on nodes of 1 CPU: at most 2 containers a node, so 8 concurrent requests share 4.
    answers = burst(ray_cluster, 8, 1500)
    assert all(status == 200 for status, _ in answers), answers
    pids = {(body["node"], body["pid"]) for _, body in answers if isinstance(body, dict)}
    per_node = Counter(node for node, _ in pids)
    assert per_node and max(per_node.values()) <= 2, per_node
    for node in nodes(ray_cluster).values():
        assert node["reserved_cpu"] <= node["cpu"], node


def test_a_function_that_fits_no_node_gets_a_clear_503(ray_cluster: RayCluster, tmp_path: Path) -> None:
    shutil.copy(APPS / "huge.py", tmp_path / "huge.py")
    ray_cluster.wisp.run("deploy", str(tmp_path / "huge.py"))
    answer = requests.get(ray_cluster.wisp.url("huge--big"), timeout=60)
    assert answer.status_code == 503, answer.text
    assert "more than any node has" in answer.text and "cpu=" in answer.text, answer.text
    listed = ray_cluster.wisp.run("app", "list").stdout
    assert "more than any node has" in listed, listed
    ray_cluster.wisp.run("app", "stop", "huge")


def test_a_redeploy_under_load_loses_nothing(ray_cluster: RayCluster, deployed: Path) -> None:
    load = Load(ray_cluster, workers=4, ms=200)
    try:
        wait_until(lambda: len(load.answers) >= 8, timeout=60, message="load running")
        deployed.write_text(deployed.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
        ray_cluster.wisp.run("deploy", str(deployed))
        wait_until(lambda: load.seen(lambda body: body["version"] == "v2"), timeout=60, message="v2 answering")
        time.sleep(1)
    finally:
        answers = load.stop()
    failed = [(status, body) for _, status, body in answers if status != 200]
    assert failed == [], failed
    assert len(answers) >= 12


def test_draining_a_node_loses_nothing(ray_cluster: RayCluster, deployed: Path) -> None:
    load = Load(ray_cluster, workers=4, ms=300)
    try:
        wait_until(lambda: len({b["node"] for _, s, b in list(load.answers) if s == 200 and isinstance(b, dict)}) == 2,
                   timeout=60, message="both nodes serving")
        name = sorted(nodes(ray_cluster))[0]
        out = ray_cluster.wisp.run("node", "drain", name).stdout
        assert "draining" in out, out
        drained_at = time.monotonic()
        time.sleep(4)
    finally:
        answers = load.stop()
    failed = [(status, body) for _, status, body in answers if status != 200]
    assert failed == [], failed
    # Sent once the drain had had time to move them: none on the drained node.
    late = [body for sent, status, body in answers if sent > drained_at + 2 and isinstance(body, dict)]
    assert late and all(body["node"] != name for body in late), late
    assert nodes(ray_cluster)[name]["state"] == "draining"
    assert nodes(ray_cluster)[name]["containers"] == 0


def test_a_killed_node_costs_only_its_requests_in_flight(ray_cluster: RayCluster, deployed: Path) -> None:
    before = set(nodes(ray_cluster))
    added = ray_cluster.add_node()
    wait_until(lambda: len(nodes(ray_cluster)) == len(before) + 1, timeout=60, message="the new node joins")
    (new,) = set(nodes(ray_cluster)) - before
    load = Load(ray_cluster, workers=6, ms=1000)
    try:
        wait_until(lambda: load.seen(lambda body: body["node"] == new), timeout=60, message="the new node serving")
        doomed = {body["pid"] for _, s, body in list(load.answers) if s == 200 and isinstance(body, dict)
                  and body["node"] == new}
        ray_cluster.kill(added)
        killed_at = time.monotonic()
        wait_until(lambda: nodes(ray_cluster)[new]["state"] == "lost", timeout=30, message="the node seen lost")
        time.sleep(4)
    finally:
        answers = load.stop()
    failed = [(sent, status, body) for sent, status, body in answers if status != 200]
    # At most one request in flight per container of the killed node (2 at cpu=0.5), each a 502.
    assert len(failed) <= 2 and all(status == 502 for _, status, _ in failed), failed
    after = [body for sent, status, body in answers if sent > killed_at and status == 200 and isinstance(body, dict)]
    assert len(after) >= 6 and all(body["node"] != new for body in after), after
    # Its containers died with their agent (a parent-death signal), not left running.
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in doomed), timeout=30,
               message=f"the killed node's containers {doomed} gone")

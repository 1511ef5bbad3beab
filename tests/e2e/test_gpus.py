"""GPUs (issue 15, point 4) with a real server and real containers; only the inventory is faked,
at the discovery boundary (WISP_GPU_INVENTORY: two T4s). Each container holds its own device
(its CUDA_VISIBLE_DEVICES), a third waits until one is given back, and a function asking for a
GPU the machine lacks deploys but answers 503 naming what it asked for and what there is."""
from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import Wisp, admin, get, start_wisp, wait_until

pytestmark = pytest.mark.e2e
APP = Path(__file__).parent / "apps" / "gpus.py"
UUIDS = ("GPU-11111111-aaaa", "GPU-22222222-bbbb")
INVENTORY = "".join(f"{i}, Tesla T4, {uuid}, 15360 MiB\n" for i, uuid in enumerate(UUIDS))


class Deployed:
    def __init__(self, wisp: Wisp, output: str) -> None:
        self.wisp = wisp
        self.output = output  # what `wisp deploy` printed


@pytest.fixture(scope="module")
def two_t4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    folder = tmp_path_factory.mktemp("gpus")
    (folder / "inventory.csv").write_text(INVENTORY)
    wisp = start_wisp(folder / "home", {"WISP_GPU_INVENTORY": str(folder / "inventory.csv")})
    try:
        shutil.copy(APP, folder / APP.name)
        yield Deployed(wisp, wisp.run("deploy", str(folder / APP.name)).stdout)
    finally:
        wisp.run("server", "stop", check=False)


def local_node(wisp: Wisp) -> dict[str, object]:
    (node,) = json.loads(admin(wisp, "/v1/nodes")[1])["nodes"]
    return node  # type: ignore[no-any-return]  # JSON


def test_each_container_holds_its_own_gpu_and_a_third_waits(two_t4: Deployed) -> None:
    wisp = two_t4.wisp
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: requests.get(wisp.url("gpus--t4", "/?seconds=3"), timeout=120), range(3)))
    assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
    seen = {(a.json()["pid"], a.json()["cuda"]) for a in answers}
    pids = {pid for pid, _ in seen}
    assert len(pids) == 2 and len(seen) == 2, seen  # two containers, never a third; each kept its device
    assert sorted(cuda for _, cuda in seen) == sorted(UUIDS)  # one T4 each, not the same one
    assert {a.json()["order"] for a in answers} == {"PCI_BUS_ID"}
    logs = wisp.run("app", "logs", "gpus").stdout
    assert "every GPU that fits T4 is held by another container" in logs, logs  # the third start waited
    if wisp.runtime() == "sandbox":  # each GPU container in a root of its own, with its own device nodes
        assert "its GPUs' device nodes are bound into a root of its own" in logs, logs
    assert local_node(wisp)["gpu"] == 2
    # the devices come back when the containers exit (container_idle_timeout=2)
    wait_until(lambda: local_node(wisp)["reserved_gpu"] == 0, timeout=60, message="the T4s given back")
    again = get(wisp.url("gpus--t4"))
    assert again.status_code == 200 and again.json()["cuda"] in UUIDS


def test_an_idle_container_holding_the_gpus_gives_them_up(two_t4: Deployed) -> None:
    wisp = two_t4.wisp
    both = get(wisp.url("gpus--both"))
    assert both.status_code == 200 and sorted(both.json()["cuda"].split(",")) == sorted(UUIDS), both.text
    answer = get(wisp.url("gpus--t4"))  # both T4s held by `both`'s idle container (for a minute): it gives them up
    assert answer.status_code == 200 and answer.json()["cuda"] in UUIDS, answer.text
    assert "stopped to make room for another function (the GPUs it could use are all held)" in \
        wisp.run("app", "logs", "gpus").stdout


def test_a_gpu_the_machine_lacks_gets_503_naming_both(two_t4: Deployed) -> None:
    answer = get(two_t4.wisp.url("gpus--a100"))
    assert answer.status_code == 503, answer.text
    assert "gpu='A100'" in answer.text and "2 x Tesla T4 (index 0, 1)" in answer.text, answer.text


def test_the_deploy_warns_and_app_list_shows_what_cannot_run(two_t4: Deployed) -> None:
    assert "Warning: `a100` cannot run on this machine" in two_t4.output, two_t4.output
    assert "Warning: `h100` cannot run on this machine" in two_t4.output, two_t4.output
    listing = two_t4.wisp.run("app", "list").stdout
    assert listing.count("CANNOT RUN HERE") == 2, listing
    assert "gpu=['H100', 'A100:2']" in listing, listing
    (app,) = json.loads(admin(two_t4.wisp, "/v1/apps")[1])["apps"]
    states = {e["function"]: e["state"] for e in [*app["endpoints"], *app["functions"]]}
    assert states == {"t4": "ok", "both": "ok", "a100": "unplaceable", "h100": "unplaceable", "plain": "ok"}


def test_a_function_without_gpu_sees_none(two_t4: Deployed) -> None:
    answer = get(two_t4.wisp.url("gpus--plain"))
    assert answer.status_code == 200 and answer.json()["cuda"] == "", answer.text


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None or importlib.util.find_spec("pynvml") is not None,
                    reason="this machine has an NVIDIA driver: docs/gpus.md says how to check on it")
def test_on_a_machine_without_gpus_a_gpu_function_gets_503(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home")  # the real discovery: no pynvml, no nvidia-smi here
    try:
        shutil.copy(APP, tmp_path / APP.name)
        wisp.run("deploy", str(tmp_path / APP.name))
        answer = get(wisp.url("gpus--t4"))
        assert answer.status_code == 503, answer.text
        assert "gpu='T4'" in answer.text and "no GPU (no NVIDIA driver found" in answer.text, answer.text
        assert get(wisp.url("gpus--plain")).status_code == 200
    finally:
        wisp.run("server", "stop", check=False)

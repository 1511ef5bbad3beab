"""Container lifecycle hooks through the real server and containers (issue 3, point 4; S12)."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .conftest import REPO, Wisp, admin, get, wait_until

pytestmark = pytest.mark.e2e
APP = "lifecycle"


@dataclass
class Deployed:
    wisp: Wisp

    def lines(self) -> list[str]:
        """The hooks' event lines, as the app's logs show them."""
        logs = self.wisp.run("app", "logs", APP).stdout.splitlines()
        return [line.split("[event] ", 1)[1] for line in logs if "[event] " in line]

    def url(self, function: str, path: str = "/") -> str:
        return self.wisp.url(f"{APP}--{function}", path)


@pytest.fixture(scope="module")
def deployed(wisp: Wisp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    folder = tmp_path_factory.mktemp("lifecycle")
    shutil.copy(REPO / "tests/e2e/apps/lifecycle.py", folder / "lifecycle.py")
    wisp.run("deploy", str(folder / "lifecycle.py"))
    yield Deployed(wisp)
    wisp.run("app", "stop", APP, check=False)


def test_enter_runs_once_per_container_before_its_first_request(deployed: Deployed) -> None:
    first = get(deployed.url("model-state", "/?x=2")).json()
    second = get(deployed.url("model-state")).json()
    assert first["pid"] == second["pid"]  # one container served both
    assert first["loaded_at"] == second["loaded_at"] <= first["served_at"]  # state from enter, set once
    assert first["order"] == ["load", "connect"]  # several enter methods, in definition order
    assert first["x"] == 2
    assert deployed.lines().count(f"enter Model {first['pid']}") == 1
    assert "Model: enter finished in " in deployed.wisp.run("app", "logs", APP).stdout


def test_asgi_factory_on_a_method_sees_what_enter_set(deployed: Deployed) -> None:
    body = get(deployed.url("model-api", "/order")).json()
    assert body["order"] == ["load", "connect"]
    assert f"enter Model {body['pid']}" in deployed.lines()


def test_seed_form_class_with_dunder_enter_and_webhook_method(deployed: Deployed) -> None:
    first = get(deployed.url("seed-predict", "/?x=4")).json()
    second = get(deployed.url("seed-predict", "/?x=5")).json()
    assert (first["y"], second["y"]) == (12, 15)
    assert first["pid"] == second["pid"]
    assert deployed.lines().count(f"enter Seed {first['pid']}") == 1


def test_enter_that_raises_gives_503_with_the_exception(deployed: Deployed) -> None:
    r = get(deployed.url("broken-web"))
    assert r.status_code == 503
    assert "RuntimeError: model weights not found in /models" in r.json()["error"]
    logs = deployed.wisp.run("app", "logs", APP).stdout
    assert "Broken.load raised while the container was starting" in logs
    assert get(deployed.url("seed-predict", "/?x=1")).status_code == 200  # the other classes serve on


def test_exit_runs_in_every_container_at_app_stop(deployed: Deployed) -> None:
    urls = [deployed.url("model-state"), deployed.url("seed-predict", "/?x=1"), deployed.url("model-api", "/order")]
    pids = {get(url).json()["pid"] for url in urls}
    entered = [line.split(" ", 1)[1] for line in deployed.lines() if line.startswith("enter ")]
    assert len(entered) == len(set(entered)) >= 3  # each container entered once

    deployed.wisp.run("app", "stop", APP)

    def exited() -> list[str]:
        return [line.split(" ", 1)[1] for line in deployed.lines() if line.startswith("exit ")]

    wait_until(lambda: len(exited()) >= len(entered), timeout=15, message="exit hooks of every container")
    assert sorted(exited()) == sorted(
        f"{e} (None, None, None)" if e.startswith("Seed ") else e for e in entered
    )
    assert {e.split()[1] for e in entered} >= pids


def test_enter_duration_is_in_the_metrics(deployed: Deployed) -> None:
    get(deployed.url("model-state"))
    status, text = admin(deployed.wisp, "/metrics")
    assert status == 200
    assert f'wisp_enter_seconds_count{{app="{APP}",function="Model.state"}}' in text

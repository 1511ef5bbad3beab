"""Containers forked from a zygote: their own environment, folder and module state (issue 6)."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import REPO, Wisp, get

pytestmark = pytest.mark.e2e


def test_forked_containers_are_separate_and_survive_a_sibling_crash(wisp: Wisp, tmp_path: Path) -> None:
    shutil.copy(REPO / "tests/e2e/apps/zygote_app.py", tmp_path / "zygote_app.py")
    wisp.run("deploy", str(tmp_path / "zygote_app.py"))
    url = wisp.url("zygote--inside", "/?hold=1")
    with ThreadPoolExecutor(2) as pool:
        first, second = [r.json() for r in pool.map(lambda _: requests.get(url, timeout=120), range(2))]
    assert first["pid"] != second["pid"]
    for body in (first, second):
        assert "wisp._runtime.zygote" in body["parent"]  # forked, not a fresh interpreter
        assert body["seen"] == [body["pid"]]  # fresh module state per container
        assert body["app"] == "zygote" and body["function"] == "inside"  # its own environment
        assert body["cwd"].endswith("/apps/zygote/v1")  # its version's folder
    zygote_pid = first["ppid"]

    assert get(wisp.url("zygote--crash")).status_code == 502  # a container of the same image dies
    os.kill(zygote_pid, 0)  # the zygote lives on
    again = get(wisp.url("zygote--inside")).json()
    assert again["pid"] in (first["pid"], second["pid"])  # the siblings still serve
    assert again["ppid"] == zygote_pid
    wisp.run("app", "stop", "zygote")

"""Issue 16: one function zygote per app version (secrets kept per function), and idle zygotes
released under the memory bound (WISP_ZYGOTE_MEMORY_MB), re-created on the next request."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from . import test_zygote
from .conftest import REPO, Wisp, get, processes_in_group, server_with, wait_until
from .test_zygote import _ppid, _zygotes

pytestmark = pytest.mark.e2e
APPS = REPO / "tests/e2e/apps"
wisp = test_zygote.wisp  # the fixture: a zygote-runtime server for this module too (why: its docstring)


def test_the_functions_of_an_app_version_are_forked_from_one_function_zygote(wisp: Wisp, tmp_path: Path) -> None:
    shutil.copy(APPS / "zygote_shared.py", tmp_path / "zygote_shared.py")
    wisp.run("deploy", str(tmp_path / "zygote_shared.py"))
    folder = wisp.home.resolve() / "apps/zygote-shared/v1"
    answers = {name: get(wisp.url(f"zygote-shared--{name}")).json() for name in ("one", "two", "three")}
    zygote = answers["one"]["ppid"]
    for name, body in answers.items():
        assert body["function"] == name  # each container has its own function's environment
        assert body["ppid"] == zygote and "wisp._runtime.zygote" in body["parent"]  # forked by the one zygote
        assert body["imported_by"] == [zygote]  # which imported the script once, for all three
    assert len({body["pid"] for body in answers.values()}) == 3
    assert list(_zygotes(f"{folder}/")) == [zygote]
    assert len(processes_in_group(str(folder))) == 4  # one function zygote and three containers, no more
    wisp.run("app", "stop", "zygote-shared")
    wait_until(lambda: not processes_in_group(str(folder)), message="the app's zygote and containers to exit")


def test_functions_with_different_secrets_each_see_only_their_own(wisp: Wisp, tmp_path: Path) -> None:
    shutil.copy(APPS / "zygote_secrets.py", tmp_path / "zygote_secrets.py")
    wisp.run("deploy", str(tmp_path / "zygote_secrets.py"))
    got = {name: get(wisp.url(f"zygote-secrets--{name.replace('_', '-')}")).json()
           for name in ("alpha", "beta", "plain", "plain_too")}
    nothing = {"ALPHA_TOKEN": None, "BETA_TOKEN": None}
    expected = {"alpha": {**nothing, "ALPHA_TOKEN": "alpha-7781"}, "beta": {**nothing, "BETA_TOKEN": "beta-3392"},
                "plain": nothing, "plain_too": nothing}
    for name, body in got.items():
        assert body["function"] == name
        assert body["env"] == expected[name], name  # at request time
        assert body["at_import"] == expected[name], name  # and what the script saw when it was imported
    for body in got.values():
        assert _ppid(body["ppid"]) != body["ppid"]  # sanity: forked from a function zygote
    assert got["plain"]["ppid"] == got["plain_too"]["ppid"]  # no secrets between them: one zygote
    assert len({got[name]["ppid"] for name in ("alpha", "beta", "plain")}) == 3  # never one with another's secrets
    wisp.run("app", "stop", "zygote-secrets")


def test_an_idle_function_zygote_is_released_past_the_bound_and_recreated_from_the_image_zygote(tmp_path: Path) -> None:
    # The zygote runtime's process tree, as `wisp` says.
    with server_with(tmp_path, APPS / "zygote_keeper.py", WISP_ZYGOTE_MEMORY_MB="0", WISP_RUNTIME="zygote") as wisp:
        keeper = get(wisp.url("zygote-keeper--where")).json()  # a warm container: its zygotes are busy
        image_zygote = _ppid(keeper["ppid"])
        shutil.copy(APPS / "zygote_release.py", tmp_path / "zygote_release.py")
        wisp.run("deploy", str(tmp_path / "zygote_release.py"))
        folder = f"{wisp.home.resolve()}/apps/zygote-release/v1/"

        first = get(wisp.url("zygote-release--where"))
        assert first.status_code == 200
        first_zygote = first.json()["ppid"]
        assert _ppid(first_zygote) == image_zygote
        # The container scales down after 2 s; its zygote, idle now, is past a bound of 0 MB.
        wait_until(lambda: not _zygotes(folder) and not processes_in_group(folder), timeout=60,
                   message="the idle function zygote to be released")
        log = (wisp.home / "logs" / "zygote-release.log").read_text()
        assert "released the idle function zygote" in log

        again = get(wisp.url("zygote-release--where"))
        assert again.status_code == 200
        second_zygote = again.json()["ppid"]
        assert second_zygote != first_zygote  # a new function zygote ...
        assert _ppid(second_zygote) == image_zygote  # ... forked from the same image zygote
        assert get(wisp.url("zygote-keeper--where")).json()["ppid"] == keeper["ppid"]  # the busy one stayed

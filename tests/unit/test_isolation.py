"""What separates containers from the server and from each other (wisp.server.isolation, issue 11):
the environment they start from, the per-app uid range and its allocation, who may enter a folder,
and the app_uids table."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from wisp.server.isolation import (
    DEFAULT_UID_BASE,
    WISP_VARIABLES,
    allocate_uid,
    base_env,
    isolation_problem,
    uid_settings,
    untraversable,
    zygote_env,
)
from wisp.server.store import Store

SERVER_ENV = {"WISP_HOME": "/srv/wisp", "WISP_TOKEN": "wd-x", "AWS_SECRET_ACCESS_KEY": "k", "PATH": "/home/me/bin:/usr/bin",
              "LANG": "de_DE.UTF-8", "PYTHONPATH": "/elsewhere", "VIRTUAL_ENV": "/server/venv"}
DIR = stat.S_IFDIR


def test_a_container_starts_from_a_minimum_that_names_nothing_of_the_servers() -> None:
    env = base_env(Path("/srv/wisp/apps/a/v1"), SERVER_ENV["LANG"])
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/srv/wisp/apps/a/v1", "LANG": "de_DE.UTF-8",
                   "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    assert not set(env) & {"WISP_HOME", "WISP_TOKEN", "AWS_SECRET_ACCESS_KEY", "PYTHONPATH", "VIRTUAL_ENV"}
    assert base_env(Path("/x"), None)["LANG"] == "C.UTF-8"


def test_the_image_zygote_gets_the_same_minimum_and_wisp_names_its_variables() -> None:
    assert zygote_env(None) == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    assert "WISP_HOME" not in WISP_VARIABLES and "WISP_CALL_TOKEN" in WISP_VARIABLES


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, (DEFAULT_UID_BASE, 65536)),
    ({"WISP_APP_UID_BASE": "500000", "WISP_APP_UID_COUNT": "10"}, (500000, 10)),
    ({"WISP_APP_UID_BASE": ""}, (DEFAULT_UID_BASE, 65536)),  # empty counts as unset
])
def test_uid_settings(environ: dict[str, str], expected: tuple[int, int]) -> None:
    assert uid_settings(environ) == expected


@pytest.mark.parametrize(("environ", "says"), [
    ({"WISP_APP_UID_BASE": "many"}, "WISP_APP_UID_BASE='many' must be a whole number"),
    ({"WISP_APP_UID_COUNT": "0"}, "WISP_APP_UID_COUNT='0' must be a whole number above 0"),
    ({"WISP_APP_UID_BASE": "100"}, "away from real users"),  # root's and system users' uids
    ({"WISP_APP_UID_BASE": "4294967000", "WISP_APP_UID_COUNT": "1000"}, "must stay within"),
])
def test_bad_uid_settings_name_the_variable(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        uid_settings(environ)


@pytest.mark.parametrize(("taken", "expected"), [
    ([], 1000),
    ([1000], 1001),
    ([1001, 1000, 1003], 1002),  # the lowest free one: a removed app's uid is not reused while kept
    ([7, 99999], 1000),  # outside the range: no matter
])
def test_allocate_uid(taken: list[int], expected: int) -> None:
    assert allocate_uid(taken, 1000, 5) == expected


def test_a_full_range_says_which_setting_to_raise() -> None:
    with pytest.raises(RuntimeError, match="WISP_APP_UID_COUNT"):
        allocate_uid([1000, 1001], 1000, 2)


@pytest.mark.parametrize(("modes", "path", "blocked"), [
    ({}, "/srv/wisp/home", None),
    ({"/root": DIR | 0o700}, "/root/.wisp", "/root"),
    ({"/root": DIR | 0o711}, "/root/.wisp", None),  # enter, but not list: enough
    ({"/tmp/pytest-of-root": DIR | 0o700}, "/tmp/pytest-of-root/p-1/home", "/tmp/pytest-of-root"),
    ({"/srv/wisp/home": DIR | 0o700}, "/srv/wisp/home", "/srv/wisp/home"),  # the folder itself counts
    ({"/srv/file": stat.S_IFREG | 0o600}, "/srv/file", None),  # files are no folders to pass through
])
def test_untraversable(modes: dict[str, int], path: str, blocked: str | None) -> None:
    assert untraversable(Path(path), modes) == (None if blocked is None else Path(blocked))


def test_isolation_problem_says_why_containers_share_the_servers_uid(tmp_path: Path) -> None:
    open_home = Path("/usr")  # every user may enter it
    assert isolation_problem(0, open_home, {}) is None
    assert "not running as root" in (isolation_problem(1000, open_home, {}) or "")
    assert "sandbox runtime" in (isolation_problem(1000, open_home, {}) or "")
    assert "WISP_APP_UIDS=0" in (isolation_problem(0, open_home, {"WISP_APP_UIDS": "0"}) or "")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    blocked = untraversable(closed / "home")
    said = isolation_problem(0, closed / "home", {}) or ""
    assert blocked is not None and f"chmod o+x {blocked}" in said and "WISP_HOME" in said
    said = isolation_problem(0, open_home, {}, [closed / "wisp"]) or ""
    assert "Install wisp where other users may read it" in said


def test_an_app_keeps_its_uid_across_restarts_and_no_two_apps_share_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    pick = lambda taken: allocate_uid(taken, 5000, 10)  # noqa: E731
    assert [store.app_uid(app, pick) for app in ("a", "b", "a", "a-dev")] == [5000, 5001, 5000, 5002]
    store.close()
    again = Store(tmp_path / "state.db")
    assert again.app_uid("b", pick) == 5001 and again.app_uid("c", pick) == 5003
    again.close()

"""`wisp app rollback NAME [VERSION]` and the dashboard's rollback (issue 17, point 5): a kept
earlier version is deployed again as a new version, its local files placed again, proven ready
and switched in like any deploy."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import Wisp, get, start_wisp

pytestmark = pytest.mark.e2e

SCRIPT = '''
from pathlib import Path

import wisp

image = wisp.Image.debian_slim().add_local_file("data.txt", "/root/data/data.txt")
app = wisp.App("rolling", image=image)


@app.function()
@wisp.fastapi_endpoint()
def which():
    return {{"code": "{code}", "data": (Path(__file__).parent / "data" / "data.txt").read_text()}}
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Wisp, Path]]:
    root = tmp_path_factory.mktemp("rollback")
    wisp = start_wisp(root / "home")
    try:
        yield wisp, root
    finally:
        wisp.run("server", "stop", check=False)


def deploy(wisp: Wisp, root: Path, code: str) -> None:
    folder = root / f"src-{code}"
    folder.mkdir(exist_ok=True)
    (folder / "data.txt").write_text(f"data of {code}")
    (folder / "app.py").write_text(SCRIPT.format(code=code))
    wisp.run("deploy", str(folder / "app.py"))


def serving(wisp: Wisp) -> dict[str, str]:
    answer: dict[str, str] = get(wisp.url("rolling--which")).json()
    return answer


def version(wisp: Wisp) -> int:
    line = next(line for line in wisp.run("app", "list").stdout.splitlines() if line.startswith("rolling "))
    return int(line.rsplit("version", 1)[1])


def test_rollback_serves_an_earlier_versions_code_and_files_as_a_new_version(server: tuple[Wisp, Path]) -> None:
    wisp, root = server
    deploy(wisp, root, "one")
    deploy(wisp, root, "two")
    assert serving(wisp) == {"code": "two", "data": "data of two"} and version(wisp) == 2

    said = wisp.run("app", "rollback", "rolling").stdout
    assert "the version before" in said and "version 3" in said, said
    assert serving(wisp) == {"code": "one", "data": "data of one"} and version(wisp) == 3

    wisp.run("app", "rollback", "rolling", "2")
    assert serving(wisp) == {"code": "two", "data": "data of two"} and version(wisp) == 4


@pytest.mark.parametrize(("args", "message"), [
    (["rolling", "99"], "has no version 99 kept to roll back to"),
    (["nothing-here"], "No deployed app named 'nothing-here'"),
])
def test_a_rollback_that_cannot_be_says_why(server: tuple[Wisp, Path], args: list[str], message: str) -> None:
    wisp, root = server
    if version_missing(wisp):
        deploy(wisp, root, "one")
    failed = wisp.run("app", "rollback", *args, check=False)
    assert failed.returncode == 1 and message in failed.stderr, failed.stderr


def version_missing(wisp: Wisp) -> bool:
    return "rolling " not in wisp.run("app", "list").stdout


def test_the_dashboard_rolls_back_from_its_page(server: tuple[Wisp, Path]) -> None:
    wisp, root = server
    if version_missing(wisp):
        deploy(wisp, root, "one")
    deploy(wisp, root, "three")
    before = version(wisp)
    link = wisp.run("dashboard").stdout.splitlines()[0]
    origin = link.split("/dashboard/", 1)[0]
    session = requests.Session()
    assert session.get(link, timeout=30).status_code == 200
    endpoint = f"{origin}/dashboard/api/apps/rolling/rollback"
    assert session.post(endpoint, json={"version": 1}, timeout=30).status_code == 403  # not from the page
    answer = session.post(endpoint, json={"version": 1}, headers={"Origin": origin}, timeout=120)
    assert answer.status_code == 200 and answer.json() == {"version": before + 1}, answer.text
    assert serving(wisp)["code"] == "one"

"""`wisp server start --store postgresql://...`: real servers on a real, throwaway Postgres; servers
with homes of their own serve what any of them deployed, and stop what any of them stopped (issue 14)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from pgserver import PostgresServer

from .conftest import _STARTED, Wisp, free_port, get, open_for_containers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SCRIPT = """
import wisp

stub = wisp.Stub("shared")


@stub.webhook
def hello():
    return {{"from": "{answer}"}}
"""


def start_on(home: Path, store: str) -> Wisp:
    open_for_containers(home)
    wisp = Wisp(home, free_port())
    wisp.run("server", "start", "--store", store)
    _STARTED.append((home, os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]))
    return wisp


def test_a_second_server_on_the_same_postgres_serves_the_app_without_its_folders(postgres: PostgresServer,
                                                                                tmp_path: Path) -> None:
    url = postgres.new_database()
    script = write_script(tmp_path, "postgres")

    first = start_on(tmp_path / "home1", url)
    try:
        first.run("deploy", str(script))
        assert get(first.url("shared--hello")).json() == {"from": "postgres"}
        assert "shared" in first.run("app", "list").stdout
        backup = first.run("server", "backup", check=False)
        assert backup.returncode == 1 and "pg_dump" in backup.stdout + backup.stderr
    finally:
        first.run("server", "stop", check=False)
    assert not (first.home / "state.db").exists()  # the store was Postgres, not the home's file

    # Another machine's server would not have the first one's app folders: take them away.
    shutil.rmtree(first.home / "apps")
    second = start_on(tmp_path / "home2", url)
    try:
        # The version's files come from the store: unpacked again into this server's own home.
        assert get(second.url("shared--hello")).json() == {"from": "postgres"}
        assert re.search(r"^shared  running  deploy  version 1", second.run("app", "list").stdout, re.M)
        assert (second.home / "apps" / "shared" / "v1" / "shared.py").read_text() == SCRIPT.format(answer="postgres")
    finally:
        second.run("server", "stop", check=False)


def test_two_servers_on_one_postgres_both_route_to_an_app_deployed_or_stopped_through_either(
        postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    a = start_on(tmp_path / "home-a", url)
    b = start_on(tmp_path / "home-b", url)
    try:
        a.run("deploy", str(write_script(tmp_path / "one", "one")))
        for server in (a, b):  # b follows a's deploy: its own containers, its own gateway
            wait_answer(server, {"from": "one"}, timeout=180)

        b.run("deploy", str(write_script(tmp_path / "two", "two")))  # new code, through the other server
        for server in (b, a):
            wait_answer(server, {"from": "two"}, timeout=60)
        for server in (a, b):
            assert re.search(r"^shared  running  deploy  version 2", server.run("app", "list").stdout, re.M)
        # Each server deployed a version itself once and followed the other's: never one twice.
        for server, own, followed in ((a, 1, 2), (b, 2, 1)):
            log = (server.home / "logs" / "shared.log").read_text()
            assert log.count(f"version {followed} of shared was deployed through another server") == 1, log
            assert f"version {own} of shared was deployed through another server" not in log, log

        a.run("app", "stop", "shared")
        for server in (a, b):
            wait_answer(server, 404, timeout=15)
        assert "stopped through another server" in (b.home / "logs" / "shared.log").read_text()
    finally:
        for server in (a, b):
            server.run("server", "stop", check=False)


def write_script(folder: Path, answer: str) -> Path:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    script = folder / "src" / "shared.py"
    script.write_text(SCRIPT.format(answer=answer))
    return script


def wait_answer(server: Wisp, expected: object, timeout: float) -> None:
    """Until the server's gateway answers `expected` for the app: its JSON, or a status code."""
    def answered() -> bool:
        response = get(server.url("shared--hello"), timeout=30)
        return (response.json() if response.status_code == 200 else response.status_code) == expected
    wait_until(answered, timeout=timeout, interval=0.2, message=f"{server.home.name} answering {expected}")


def test_an_unreachable_postgres_fails_the_start_saying_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    wisp = Wisp(home, free_port())
    started = wisp.run("server", "start", "--store", f"postgresql://wisp:s3cret@127.0.0.1:{free_port()}/wisp",
                       check=False)
    said = started.stdout + started.stderr
    assert started.returncode == 1, said
    assert "cannot connect to Postgres at postgresql://wisp:***@127.0.0.1" in said and "psql" in said, said
    assert "s3cret" not in said
    bad = wisp.run("server", "start", "--store", "mysql://db/wisp", check=False)
    assert bad.returncode == 1 and "not a store URL wisp knows" in bad.stdout + bad.stderr

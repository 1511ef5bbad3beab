"""`wisp server start --store postgresql://...`: real servers on a real, throwaway Postgres; a
second server with a home of its own finds what the first deployed (issue 14)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pgserver import PostgresServer

from .conftest import _STARTED, Wisp, free_port, get, open_for_containers

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SCRIPT = """
import wisp

stub = wisp.Stub("shared")


@stub.webhook
def hello():
    return {"from": "postgres"}
"""


def start_on(home: Path, store: str) -> Wisp:
    open_for_containers(home)
    wisp = Wisp(home, free_port())
    wisp.run("server", "start", "--store", store)
    _STARTED.append((home, os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]))
    return wisp


def test_a_second_server_on_the_same_postgres_lists_the_deployed_app(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    (tmp_path / "src").mkdir()
    script = tmp_path / "src" / "shared.py"
    script.write_text(SCRIPT)

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
        listed = second.run("app", "list").stdout
        # Known from the shared store; its code lives in the first server's home (app folders are
        # local), so this server cannot serve it and says why, rather than answering for it.
        assert "shared  failed  deploy  version 1" in listed, listed
        assert "shared/v1, is missing" in listed, listed
        answer = get(second.url("shared--hello"))
        assert answer.status_code == 404, (answer.status_code, answer.text)
    finally:
        second.run("server", "stop", check=False)


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

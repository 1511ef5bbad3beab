"""App uid claims on disk (uid_claims.py): which store on this machine holds each uid."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from wisp.server.isolation import allocate_uid
from wisp.server.store import parse_store_url
from wisp.server.uid_claims import UNREADABLE, UidClaims, claim_held, owner_of, stale


@pytest.mark.parametrize(("holder", "folders", "is_stale"), [
    ("sqlite:/srv/a/state.db", {"/srv/a"}, False),  # its state.db may be moved aside (a restore): still held
    ("sqlite:/srv/gone/state.db", set(), True),  # its WISP_HOME was removed
    ("postgresql://db:5432/wisp", set(), False),  # nothing here can tell whether it still holds it
    (UNREADABLE, set(), False),  # nothing is taken on a guess
])
def test_stale(holder: str, folders: set[str], is_stale: bool) -> None:
    assert stale(holder, folders.__contains__) is is_stale


@pytest.mark.parametrize(("url", "environ", "owner"), [
    ("postgresql://wisp:secret@db:6543/apps", {}, "postgresql://db:6543/apps"),
    ("postgres://other:pw@db:6543/apps?password=x&sslmode=require", {}, "postgresql://db:6543/apps"),  # one database, two spellings
    ("postgresql:///apps", {"PGHOST": "pg.internal", "PGPORT": "6000"}, "postgresql://pg.internal:6000/apps"),
    ("postgresql://wisp@/", {"PGDATABASE": "wispdb"}, "postgresql://localhost:5432/wispdb"),
    ("postgresql://wisp@db", {}, "postgresql://db:5432/wisp"),  # libpq's default database: the user's name
])
def test_a_postgres_store_is_named_by_its_server_and_database_only(url: str, environ: dict[str, str], owner: str) -> None:
    assert owner_of(parse_store_url(url, Path("/nowhere")), environ) == owner


def test_a_sqlite_store_is_named_by_its_resolved_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert owner_of(parse_store_url(None, tmp_path / "link")) == f"sqlite:{(tmp_path / 'real' / 'state.db').resolve()}"


def claims_of(folder: Path, home: Path) -> UidClaims:
    home.mkdir(exist_ok=True)
    (home / "state.db").touch()
    claims, problem = UidClaims.open({"WISP_UID_CLAIMS": str(folder)}, parse_store_url(None, home))
    assert claims is not None and problem is None
    return claims


def test_a_uid_held_by_another_store_is_skipped_and_one_of_a_removed_store_taken(tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    mine, theirs, gone = (claims_of(folder, tmp_path / name) for name in ("mine", "theirs", "gone"))
    assert theirs.claim(5000) is None and gone.claim(5001) is None
    assert (folder / "5000").stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o777 == 0o700
    assert mine.claim(5000) == theirs.owner  # held: it says by whom
    (tmp_path / "gone" / "state.db").unlink()
    assert mine.others() == {5000, 5001}  # a state.db moved aside (a restore) still holds its uids
    shutil.rmtree(tmp_path / "gone")  # its whole WISP_HOME removed
    assert mine.others() == {5000}
    pick = lambda taken: allocate_uid(taken, 5000, 10)  # noqa: E731
    assert mine.pick(pick, []) == 5001  # 5000 is theirs; 5001's store is gone
    assert mine.pick(pick, [5001]) == 5002  # its own store's uids count as taken too
    assert (folder / "5001").read_text() == (folder / "5002").read_text() == mine.owner
    assert mine.claim(5001) is None  # its own again: still its own
    assert theirs.others() == {5001, 5002}


def test_an_unreadable_claim_holds_its_uid(tmp_path: Path) -> None:
    mine = claims_of(tmp_path / "claims", tmp_path / "mine")
    (tmp_path / "claims" / "7000").write_bytes(b"\xff\xfe")
    (tmp_path / "claims" / "7001").mkdir()
    assert mine.claim(7000) == mine.claim(7001) == UNREADABLE
    assert mine.others() == {7000, 7001}


def test_a_claims_folder_others_may_write_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    claims, problem = UidClaims.open({"WISP_UID_CLAIMS": str(folder)}, parse_store_url(None, tmp_path))
    assert claims is None and problem is not None and "not root's alone" in problem


def test_no_claims_folder_is_said_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    claims, problem = UidClaims.open({"WISP_UID_CLAIMS": str(tmp_path / "file" / "claims")}, parse_store_url(None, tmp_path))
    assert claims is None and problem is not None
    assert "WISP_UID_CLAIMS" in problem and str(tmp_path / "file" / "claims") in problem


def test_a_uid_another_store_holds_is_said_and_a_lost_folder_never_fails_the_caller(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "claims"
    mine, theirs = claims_of(folder, tmp_path / "mine"), claims_of(folder, tmp_path / "theirs")
    assert theirs.claim(6000) is None
    assert claim_held(mine, "shop", 6000)  # the folder works: the caller keeps using it
    said = capsys.readouterr().out
    assert "the app shop runs as uid 6000" in said and theirs.owner in said and "deploy it again" in said
    shutil.rmtree(folder)  # wiped under a running server
    assert not claim_held(mine, "shop", 6001)
    assert "cannot write the app uids' claims" in capsys.readouterr().out

"""App uid claims on disk (uid_claims.py): which store on this machine holds each uid."""
from __future__ import annotations

from pathlib import Path

import pytest

from wisp.server.isolation import allocate_uid
from wisp.server.store import parse_store_url
from wisp.server.uid_claims import UidClaims, owner_of, stale


@pytest.mark.parametrize(("holder", "existing", "is_stale"), [
    ("sqlite:/srv/a/state.db", {"/srv/a/state.db"}, False),
    ("sqlite:/srv/gone/state.db", set(), True),  # its WISP_HOME was removed
    ("postgresql://wisp@db/wisp", set(), False),  # nothing here can tell whether it still holds it
    ("", set(), False),  # unreadable: nothing is taken on a guess
])
def test_stale(holder: str, existing: set[str], is_stale: bool) -> None:
    assert stale(holder, existing.__contains__) is is_stale


def test_a_store_is_named_by_its_file_or_its_url_without_the_password(tmp_path: Path) -> None:
    assert owner_of(parse_store_url(None, tmp_path)) == f"sqlite:{(tmp_path / 'state.db').resolve()}"
    assert owner_of(parse_store_url("postgresql://wisp:secret@db:5432/wisp", tmp_path)) == \
        parse_store_url("postgresql://wisp:secret@db:5432/wisp", tmp_path).shown
    assert "secret" not in owner_of(parse_store_url("postgresql://wisp:secret@db:5432/wisp", tmp_path))


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
    assert mine.others() == {5000}
    pick = lambda taken: allocate_uid(taken, 5000, 10)  # noqa: E731
    assert mine.pick(pick, []) == 5001  # 5000 is theirs; 5001's store is gone
    assert mine.pick(pick, [5001]) == 5002  # its own store's uids count as taken too
    assert (folder / "5001").read_text() == (folder / "5002").read_text() == mine.owner
    assert mine.claim(5001) is None  # its own again: still its own
    assert theirs.others() == {5001, 5002}


def test_no_claims_folder_is_said_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    claims, problem = UidClaims.open({"WISP_UID_CLAIMS": str(tmp_path / "file" / "claims")}, parse_store_url(None, tmp_path))
    assert claims is None and problem is not None
    assert "WISP_UID_CLAIMS" in problem and str(tmp_path / "file" / "claims") in problem

"""Opening state.db at start, backups and restore, on real files (issue 11, point 6)."""
from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from wisp.server import recovery
from wisp.server.apps import keep_versions_from_env, versions_to_prune
from wisp.server.store import Store, StoreError


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def deployed(home: Path, *names: str) -> None:
    """A home as a server leaves it: rows in state.db and a code folder per app."""
    home.mkdir(exist_ok=True)
    store = Store(home / "state.db")
    for name in names:
        store.save_version(name, name, "deploy", 1, {"name": name}, str(home / "apps" / name / "v1"))
        (home / "apps" / name / "v1").mkdir(parents=True)
    store.close()


def test_a_fresh_home_opens_without_a_backup(home: Path) -> None:
    home.mkdir()
    recovery.open_store(home).close()
    assert (home / "state.db").exists() and recovery.backups(home) == []


def test_a_start_with_apps_backs_them_up_0600(home: Path) -> None:
    deployed(home, "a")
    recovery.open_store(home).close()
    [backup] = recovery.backups(home)
    assert backup.name.endswith("-start.db") and stat.S_IMODE(backup.stat().st_mode) == 0o600
    copy = Store(backup)
    try:
        assert [row.id for row in copy.apps()] == ["a"]
    finally:
        copy.close()


def test_only_the_last_start_backups_are_kept_and_manual_ones_stay(home: Path) -> None:
    deployed(home, "a")
    manual = recovery.take_backup(home)
    for _ in range(recovery.START_BACKUPS_KEPT + 3):
        recovery.open_store(home).close()
    found = recovery.backups(home)
    assert manual in found
    assert len([p for p in found if p.name.endswith("-start.db")]) == recovery.START_BACKUPS_KEPT
    assert recovery.newest_backup(home) == found[-1] != manual


@pytest.mark.parametrize("damage", ["empty", "missing", "schema-less"])
def test_an_empty_database_beside_app_folders_is_damage(home: Path, damage: str) -> None:
    deployed(home, "a", "b")
    db = home / "state.db"
    db.unlink()
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "schema-less":
        sqlite3.connect(db).execute("VACUUM").connection.close()
    with pytest.raises(recovery.DamagedState) as caught:
        recovery.open_store(home)
    message = str(caught.value)
    assert f"{db} is {'missing' if damage == 'missing' else 'empty'}" in message
    assert "holds the code of 2 app(s) (a, b)" in message and "no backup" in message
    assert db.exists() == (damage != "missing")  # not created, and no schema written into it: the next start refuses too
    with pytest.raises(recovery.DamagedState):
        recovery.open_store(home)


def test_damage_names_the_newest_backup_and_the_command(home: Path) -> None:
    deployed(home, "a")
    recovery.take_backup(home)
    newest = recovery.take_backup(home)
    (home / "state.db").write_bytes(os.urandom(8192))
    with pytest.raises(recovery.DamagedState) as caught:
        recovery.open_store(home)
    message = str(caught.value)
    assert f"{home / 'state.db'} cannot be used: file is not a database" in message
    assert f"`wisp server restore {newest}`" in message


def test_backup_to_a_folder_and_of_a_missing_database(home: Path, tmp_path: Path) -> None:
    home.mkdir()
    with pytest.raises(StoreError, match="no state database"):
        recovery.take_backup(home)
    deployed(home, "a")
    made = recovery.take_backup(home, tmp_path)
    assert made.parent == tmp_path and made.name.startswith("state-")
    assert not list(tmp_path.glob(".*partial"))


def test_a_backup_of_a_damaged_database_is_refused_and_leaves_nothing(home: Path) -> None:
    home.mkdir()
    (home / "state.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError):
        recovery.take_backup(home)
    assert recovery.backups(home) == [] and not list((home / "backups").iterdir())


def test_restore_keeps_the_replaced_file_with_its_wal_aside(home: Path) -> None:
    deployed(home, "a")
    backup = recovery.take_backup(home)
    live = Store(home / "state.db")
    live.save_version("b", "b", "deploy", 1, {}, "/b")  # only in the WAL until a checkpoint
    stale_wal = (home / "state.db-wal").read_bytes()
    live.close()
    (home / "state.db").write_bytes(b"damaged")
    (home / "state.db-wal").write_bytes(stale_wal)  # what a server killed mid-write leaves beside it
    kept = recovery.restore(home, backup)
    assert kept is not None and kept.read_bytes() == b"damaged"
    assert kept.with_name(kept.name + "-wal").read_bytes() == stale_wal
    restored = Store(home / "state.db")
    try:  # had the stale WAL stayed, it would have been replayed into the restored file
        assert [row.id for row in restored.apps()] == ["a"]
    finally:
        restored.close()
    assert stat.S_IMODE((home / "state.db").stat().st_mode) == 0o600


def test_restore_refuses_a_file_that_is_not_a_backup(home: Path, tmp_path: Path) -> None:
    deployed(home, "a")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"nope" * 2000)
    with pytest.raises(StoreError):
        recovery.restore(home, bad)
    store = Store(home / "state.db")
    try:
        assert [row.id for row in store.apps()] == ["a"]  # untouched
    finally:
        store.close()


@pytest.mark.parametrize("versions, keep, current, in_use, pruned", [
    ([1, 2, 3, 4, 5], 2, 5, set(), [1, 2, 3]),
    ([1, 2, 3, 4, 5], 2, 5, {3}, [1, 2]),          # still draining
    ([1, 2, 3, 4, 5], 1, 5, {4}, [1, 2, 3]),
    ([1, 2, 3], 10, 3, set(), []),
    ([1, 2, 3, 4], 2, 2, set(), [1]),               # a restored backup's current version is older
    ([2, 7, 9], 1, 9, set(), [2, 7]),
    ([], 3, 0, set(), []),
])
def test_versions_to_prune(versions: list[int], keep: int, current: int, in_use: set[int], pruned: list[int]) -> None:
    assert versions_to_prune(versions, keep, current, in_use) == pruned


@pytest.mark.parametrize("value, expected", [(None, 10), ("", 10), ("3", 3), ("1", 1)])
def test_keep_versions_from_env(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int) -> None:
    if value is None:
        monkeypatch.delenv("WISP_KEEP_VERSIONS", raising=False)
    else:
        monkeypatch.setenv("WISP_KEEP_VERSIONS", value)
    assert keep_versions_from_env() == expected


@pytest.mark.parametrize("value", ["0", "-1", "ten", "2.5"])
def test_a_bad_keep_versions_stops_the_server_with_its_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WISP_KEEP_VERSIONS", value)
    with pytest.raises(SystemExit, match="WISP_KEEP_VERSIONS=.* at least 1"):
        keep_versions_from_env()

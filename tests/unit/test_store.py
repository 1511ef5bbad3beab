"""SQLite persistence on a real file: what the server must find again after a restart."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wisp.server.store import AppRow, Store, VersionRow

SPEC: dict[str, Any] = {"name": "hello", "module": "hello", "stub_attr": "stub", "functions": [{"name": "f", "web": None}]}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    opened = Store(db)
    yield opened
    opened.close()


def save(store: Store, app_id: str, mode: str = "deploy", spec: dict[str, Any] | None = None) -> int:
    version = store.next_version(app_id)
    store.save_version(app_id, app_id.split(":")[0], mode, version, spec or {**SPEC, "v": version}, f"/files/{app_id}/{version}")
    return version


def test_empty_store(store: Store) -> None:
    assert store.apps() == []
    assert store.app("missing") is None
    assert store.next_version("missing") == 1


@pytest.mark.parametrize("saves", [1, 2, 5])
def test_versions_increment_per_app(store: Store, saves: int) -> None:
    assert [save(store, "a") for _ in range(saves)] == list(range(1, saves + 1))
    assert store.next_version("a") == saves + 1
    assert store.next_version("b") == 1  # other apps count on their own
    row = store.app("a")
    assert row is not None and row.version == saves


def test_save_version_round_trip(store: Store) -> None:
    store.save_version("hello", "hello", "deploy", 1, SPEC, "/files/hello/1")
    assert store.version("hello", 1) == VersionRow("hello", 1, SPEC, "/files/hello/1")
    row = store.app("hello")
    assert isinstance(row, AppRow)
    assert (row.id, row.name, row.mode, row.state, row.version) == ("hello", "hello", "deploy", "running", 1)
    assert row.created_at <= row.updated_at


def test_every_version_keeps_its_own_spec(store: Store) -> None:
    for version in (1, 2, 3):
        save(store, "hello")
    for version in (1, 2, 3):
        saved = store.version("hello", version)
        assert saved.spec["v"] == version
        assert saved.files_dir == f"/files/hello/{version}"


def test_new_version_updates_the_app_and_keeps_created_at(store: Store) -> None:
    save(store, "hello")
    first = store.app("hello")
    store.set_state("hello", "stopped")
    save(store, "hello", mode="serve")
    again = store.app("hello")
    assert first is not None and again is not None
    assert (again.state, again.version, again.mode) == ("running", 2, "serve")
    assert again.created_at == first.created_at
    assert again.updated_at >= first.updated_at


@pytest.mark.parametrize("state", ["stopped", "running"])
def test_set_state(store: Store, state: str) -> None:
    save(store, "hello")
    store.set_state("hello", state)
    row = store.app("hello")
    assert row is not None and row.state == state


def test_set_state_of_an_unknown_app_does_nothing(store: Store) -> None:
    store.set_state("missing", "stopped")
    assert store.apps() == []


def test_apps_are_listed_by_id(store: Store) -> None:
    for app_id in ["zeta", "alpha", "mid:serve"]:
        save(store, app_id)
    assert [row.id for row in store.apps()] == ["alpha", "mid:serve", "zeta"]


def test_saving_the_same_version_twice_fails_and_leaves_the_store_usable(store: Store) -> None:
    save(store, "hello")
    with pytest.raises(sqlite3.IntegrityError):
        store.save_version("hello", "hello", "deploy", 1, {"other": True}, "/elsewhere")
    assert store.version("hello", 1).files_dir == "/files/hello/1"
    assert save(store, "hello") == 2  # no transaction was left open


def test_data_survives_closing_and_reopening(db: Path) -> None:
    first = Store(db)
    save(first, "deployed")
    save(first, "deployed")
    save(first, "served", mode="serve")
    first.set_state("served", "stopped")
    before = first.apps()
    first.close()

    second = Store(db)
    try:
        assert second.apps() == before
        assert [(r.id, r.mode, r.state, r.version) for r in before] == [
            ("deployed", "deploy", "running", 2),
            ("served", "serve", "stopped", 1),
        ]
        assert second.version("deployed", 2) == VersionRow("deployed", 2, {**SPEC, "v": 2}, "/files/deployed/2")
        assert second.next_version("deployed") == 3
    finally:
        second.close()


def test_two_stores_on_one_file_see_each_others_writes(db: Path) -> None:
    writer, reader = Store(db), Store(db)
    try:
        save(writer, "hello")
        row = reader.app("hello")
        assert row is not None and row.version == 1
    finally:
        writer.close()
        reader.close()

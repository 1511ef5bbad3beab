"""Persistence on a real SQLite file and a real Postgres: what the server must find again after a
restart. The contract tests run on both (`store`, `reopen`); the schema-version tests below them
are SQLite's (Postgres's are in test_store_pg.py)."""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wisp.server.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AppRow,
    CallRow,
    DatabaseInfo,
    DeployTokenRow,
    ProxyTokenRow,
    Store,
    StoreError,
    VersionRow,
    inspect,
    migrate,
    open_database,
    parse_store_url,
)

SPEC: dict[str, Any] = {"name": "hello", "module": "hello", "stub_attr": "stub", "functions": [{"name": "f", "web": None}]}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens a store on one database of the backend under test (again and again: the same one)."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres").new_database()
    opened: list[Store] = []

    def open_again() -> Store:
        opened.append(Store(open_database(parse_store_url(url, tmp_path))))
        return opened[-1]

    yield open_again
    for store in opened:
        store.close()


@pytest.fixture
def store(reopen: Callable[[], Store]) -> Store:
    return reopen()


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
    for _ in (1, 2, 3):
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
    with pytest.raises(store.errors):
        store.save_version("hello", "hello", "deploy", 1, {"other": True}, "/elsewhere")
    assert store.version("hello", 1).files_dir == "/files/hello/1"
    assert save(store, "hello") == 2  # no transaction was left open


def test_data_survives_closing_and_reopening(reopen: Callable[[], Store]) -> None:
    first = reopen()
    save(first, "deployed")
    save(first, "deployed")
    save(first, "served", mode="serve")
    first.set_state("served", "stopped")
    before = first.apps()
    first.close()

    second = reopen()
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


def test_two_stores_on_one_database_see_each_others_writes(reopen: Callable[[], Store]) -> None:
    writer, reader = reopen(), reopen()
    try:
        save(writer, "hello")
        row = reader.app("hello")
        assert row is not None and row.version == 1
    finally:
        writer.close()
        reader.close()


def test_ids_and_names_are_ordered_byte_by_byte_as_sqlite_does(store: Store) -> None:
    names = ["zeta", "Zeta", "alpha", "b-c", "b_c", "b.c", "é", "a:serve"]
    for name in names:
        save(store, name)
        store.put_secret(name, {"K": name}, replace=False)
    in_bytes = sorted(names, key=lambda n: n.encode())
    assert [row.id for row in store.apps()] == in_bytes
    assert [row.name for row in store.secrets()] == in_bytes


def test_times_keep_their_full_precision(store: Store) -> None:
    save(store, "a")
    row = store.app("a")
    assert row is not None
    [(version, deployed)] = store.version_history("a")
    assert version == 1 and deployed == row.created_at  # the same time.time(), read back from both tables
    assert deployed != round(deployed, 3)  # not cut to a float4's few digits (about 1 in 1000 runs is exact)


def test_version_history_is_newest_first_and_numbers_oldest_first(store: Store) -> None:
    for _ in range(3):
        save(store, "a")
    save(store, "b")
    assert [v for v, _ in store.version_history("a")] == [3, 2, 1]
    assert store.version_numbers("a") == [1, 2, 3]
    assert store.version_history("missing") == [] and store.version_numbers("missing") == []


def test_call_token_is_made_once_per_app(store: Store) -> None:
    made: list[str] = []

    def make() -> str:
        made.append(f"tok-{len(made)}")
        return made[-1]

    assert [store.call_token("a", make), store.call_token("a", make), store.call_token("b", make)] == [
        "tok-0", "tok-0", "tok-1"]
    assert made == ["tok-0", "tok-1"]


def test_a_spawned_call_from_pending_to_finished(store: Store) -> None:
    store.add_call("fc-1", "a", "f", b"\x00input\xff")
    store.add_call("fc-2", "a", "g", b"two")
    store.add_call("fc-3", "b", "f", b"three")
    first = store.call("fc-1")
    assert isinstance(first, CallRow)
    assert (first.app_id, first.function, first.state, first.input, first.answer, first.attempts, first.finished_at) \
        == ("a", "f", "pending", b"\x00input\xff", None, 0, None)
    assert store.call("fc-missing") is None
    assert [c.id for c in store.pending_calls()] == ["fc-1", "fc-2", "fc-3"]
    assert [store.count_attempt("fc-1"), store.count_attempt("fc-1"), store.count_attempt("fc-missing")] == [1, 2, 0]
    assert store.finish_call("fc-1", "done", b"\x01answer") is True
    assert store.finish_call("fc-1", "failed", b"late") is False  # ended already: the first end stays
    done = store.call("fc-1")
    assert done is not None
    assert (done.state, done.input, done.answer, done.attempts) == ("done", None, b"\x01answer", 2)
    assert done.finished_at is not None and done.finished_at >= done.created_at
    assert [c.id for c in store.pending_calls()] == ["fc-2", "fc-3"]
    assert [c.id for c in store.recent_calls("a")] == ["fc-2", "fc-1"]
    assert [c.id for c in store.recent_calls("a", limit=1)] == ["fc-2"]


def test_expire_calls_drops_only_ended_calls_finished_before(store: Store) -> None:
    for n in range(3):
        store.add_call(f"fc-{n}", "a", "f", b"x")
    store.finish_call("fc-0", "done", b"ok")
    store.finish_call("fc-1", "cancelled", None)
    ended = store.call("fc-1")
    assert ended is not None and ended.finished_at is not None
    assert store.expire_calls(before=0.0) == 0
    assert store.expire_calls(before=ended.finished_at + 1) == 2
    assert [c.id for c in store.recent_calls("a")] == ["fc-2"]  # pending: never expired


def test_secrets_put_replace_list_delete(store: Store) -> None:
    assert store.put_secret("db", {"USER": "u", "PASSWORD": "p"}, replace=False) is True
    first = store.secret("db")
    assert first is not None and first.values == {"USER": "u", "PASSWORD": "p"}
    assert store.put_secret("db", {"USER": "other"}, replace=False) is False
    assert store.secret("db") == first  # not replaced
    assert store.put_secret("db", {"USER": "new"}, replace=True) is True
    again = store.secret("db")
    assert again is not None and again.values == {"USER": "new"}
    assert again.created_at == first.created_at and again.updated_at >= first.updated_at
    store.put_secret("api", {"KEY": "k"}, replace=True)  # replace=True creates one too
    assert [s.name for s in store.secrets()] == ["api", "db"]
    assert store.delete_secret("db") is True and store.delete_secret("db") is False
    assert store.secret("db") is None and [s.name for s in store.secrets()] == ["api"]


def test_version_secrets_are_pinned_per_version_and_replaced_on_save(store: Store) -> None:
    assert store.version_secrets("a", 1) == {}
    store.save_version_secrets("a", 1, {"f": {"K": "1"}})
    store.save_version_secrets("a", 2, {"f": {"K": "2"}, "g": {}})
    store.save_version_secrets("a", 1, {"f": {"K": "again"}})
    assert store.version_secrets("a", 1) == {"f": {"K": "again"}}
    assert store.version_secrets("a", 2) == {"f": {"K": "2"}, "g": {}}


def test_proxy_tokens_add_list_remove_by_name_or_key(store: Store) -> None:
    assert store.add_proxy_token("ci", "wk-1", "sha-1") is True
    assert store.add_proxy_token("ci", "wk-2", "sha-2") is False  # the name is taken
    assert store.add_proxy_token("other", "wk-1", "sha-3") is False  # so is the key
    assert store.add_proxy_token("laptop", "wk-2", "sha-2") is True
    listed = store.proxy_tokens()
    assert [(t.name, t.key, t.secret_sha256) for t in listed] == [("ci", "wk-1", "sha-1"), ("laptop", "wk-2", "sha-2")]
    assert store.remove_proxy_token("wk-2") == listed[1]
    assert store.remove_proxy_token("ci") == listed[0]
    assert isinstance(listed[0], ProxyTokenRow)
    assert store.remove_proxy_token("ci") is None and store.proxy_tokens() == []


def test_deploy_tokens_add_list_remove(store: Store) -> None:
    assert store.add_deploy_token("ci", "hello", "sha-1") is True
    assert store.add_deploy_token("ci", "other", "sha-2") is False
    assert store.add_deploy_token("ci2", "hello", "sha-1") is False  # one hash, one token
    assert store.add_deploy_token("ci2", "hello", "sha-2") is True
    listed = store.deploy_tokens()
    assert [(t.name, t.app_name, t.token_sha256) for t in listed] == [("ci", "hello", "sha-1"), ("ci2", "hello", "sha-2")]
    assert isinstance(listed[0], DeployTokenRow)
    assert store.remove_deploy_token("ci") == listed[0]
    assert store.remove_deploy_token("ci") is None
    assert [t.name for t in store.deploy_tokens()] == ["ci2"]


def test_app_uids_are_kept_and_never_shared(reopen: Callable[[], Store]) -> None:
    store = reopen()
    pick = lambda taken: max(taken, default=4999) + 1  # noqa: E731
    assert [store.app_uid(app, pick) for app in ("a", "b", "a")] == [5000, 5001, 5000]
    other = reopen()  # another server on the same database
    assert other.app_uid("a", pick) == 5000 and other.app_uid("c", pick) == 5002
    assert store.app_uid("c", pick) == 5002


# -- schema versions (issue 11, point 6) -------------------------------------------------------
UNVERSIONED = """
CREATE TABLE apps (id TEXT PRIMARY KEY, name TEXT NOT NULL, mode TEXT NOT NULL, state TEXT NOT NULL,
                   version INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE versions (app_id TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL, files_dir TEXT NOT NULL,
                       created_at REAL NOT NULL, PRIMARY KEY (app_id, version));
INSERT INTO apps VALUES ('old', 'old', 'deploy', 'running', 2, 1.0, 2.0);
INSERT INTO versions VALUES ('old', 1, '{"v": 1}', '/files/old/1', 1.0), ('old', 2, '{"v": 2}', '/files/old/2', 2.0);
"""


def tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def user_version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_fresh_database_is_created_at_the_latest_version_in_wal_mode(db: Path) -> None:
    Store(db).close()
    assert user_version(db) == SCHEMA_VERSION == len(MIGRATIONS)
    assert {"apps", "versions", "call_tokens", "calls", "secrets", "version_secrets", "proxy_tokens"} <= tables(db)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_an_unversioned_database_is_upgraded_and_keeps_its_rows(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(UNVERSIONED)
    conn.close()
    assert inspect(db) == DatabaseInfo(0, frozenset({"apps", "versions"}))  # recognised as wisp's, not as empty
    store = Store(db)
    try:
        assert [(r.id, r.version) for r in store.apps()] == [("old", 2)]
        assert store.version("old", 1) == VersionRow("old", 1, {"v": 1}, "/files/old/1")
        assert store.secrets() == [] and store.proxy_tokens() == []  # the tables added since exist
        store.put_secret("s", {"K": "v"}, replace=False)
    finally:
        store.close()
    assert user_version(db) == SCHEMA_VERSION


def test_reopening_a_current_database_changes_nothing(db: Path) -> None:
    first = Store(db)
    save(first, "a")
    first.close()
    second = Store(db)
    try:
        assert [r.id for r in second.apps()] == ["a"]
    finally:
        second.close()
    assert user_version(db) == SCHEMA_VERSION


STEPS = ("CREATE TABLE one (x)", "CREATE TABLE two (x); INSERT INTO one VALUES (2)", "CREATE TABLE three (x)")


@pytest.mark.parametrize("start, expected", [(0, {"one", "two", "three"}), (1, {"one", "two", "three"}), (3, {"one"})])
def test_migrate_applies_only_the_missing_steps_in_order(db: Path, start: int, expected: set[str]) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    if start:
        conn.execute(f"PRAGMA user_version = {start}")
        conn.execute("CREATE TABLE one (x)")  # what step 1 made earlier
    try:
        assert migrate(conn, STEPS) == 3
        assert int(conn.execute("PRAGMA user_version").fetchone()[0]) == 3
    finally:
        conn.close()
    assert tables(db) == expected  # a step already had is not run again (CREATE TABLE one would fail)


def test_a_failing_step_leaves_the_database_at_the_step_before(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn, ("CREATE TABLE one (x)", "CREATE TABLE two (x); CREATE TABLE one (x)"))
        assert int(conn.execute("PRAGMA user_version").fetchone()[0]) == 1
        assert not conn.in_transaction
    finally:
        conn.close()
    assert tables(db) == {"one"}  # step 2's first table went with it


def test_a_database_from_a_newer_wisp_is_refused(db: Path) -> None:
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for opener in (inspect, Store):
        with pytest.raises(StoreError, match="newer wisp"):
            opener(db)


@pytest.mark.parametrize("content", [b"this is not a database " * 200, b"SQLite format 3\0" + b"\xff" * 5000])
def test_unreadable_files_raise_store_error_not_sqlite_errors(db: Path, content: bytes) -> None:
    db.write_bytes(content)
    for opener in (inspect, Store):
        with pytest.raises(StoreError, match="not a database"):
            opener(db)


def test_a_malformed_database_is_found_by_the_check(db: Path) -> None:
    store = Store(db)
    for n in range(300):
        store.put_secret(f"s{n}", {"K": "x" * 200}, replace=False)
    store.close()
    data = bytearray(db.read_bytes())
    data[2 * 4096:4 * 4096] = b"\xa5" * (2 * 4096)  # pages of the secrets table's b-tree
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        inspect(db)


@pytest.mark.parametrize("prepare, empty", [
    (lambda db: db.write_bytes(b""), True),
    (lambda db: sqlite3.connect(db).close(), True),
    (lambda db: Store(db).close(), False),
])
def test_inspect_tells_an_empty_database(db: Path, prepare: Any, empty: bool) -> None:
    prepare(db)
    assert inspect(db).empty is empty


def test_a_database_that_is_not_wisps_is_refused(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE photos (id)")
    conn.close()
    with pytest.raises(StoreError, match="not wisp's"):
        inspect(db)


def test_a_damaged_version_record_raises_store_error(store: Store) -> None:
    save(store, "a")
    store._db.run("UPDATE versions SET spec = '{not json' WHERE app_id = 'a'")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.version("a", 1)
    with pytest.raises(StoreError, match="no record of its version 2"):
        store.version("a", 2)


def test_delete_versions_drops_their_pinned_secrets_too(store: Store) -> None:
    for _ in range(3):
        version = save(store, "a")
        store.save_version_secrets("a", version, {"f": {"K": str(version)}})
    save(store, "b")
    store.delete_versions("a", [1, 2])
    assert store.version_numbers("a") == [3]
    assert store.version_numbers("b") == [1]
    assert store.version_secrets("a", 1) == {} and store.version_secrets("a", 3) == {"f": {"K": "3"}}


# -- bundles: a version's files, kept by content so any server sharing the store can serve it ---
def test_a_version_names_its_bundle_and_the_bundle_holds_the_files(store: Store) -> None:
    files = b"\x1f\x8b a tar.gz \x00\xff" * 1000  # bytes, not text: NULs and high bytes survive
    store.save_version("a", "a", "deploy", 1, SPEC, "/files/a/1", files)
    saved = store.version("a", 1)
    assert saved.bundle == hashlib.sha256(files).hexdigest()
    assert store.bundle(saved.bundle) == files
    assert store.bundle("0" * 64) is None
    store.save_version("b", "b", "deploy", 1, SPEC, "/files/b/1")  # a serve app's: no bundle
    assert store.version("b", 1).bundle is None


def test_equal_files_are_kept_once_and_outlive_the_versions_that_share_them(reopen: Callable[[], Store]) -> None:
    store = reopen()
    same, other = b"same files", b"other files"
    for version, files in ((1, same), (2, same), (3, other)):
        store.save_version("a", "a", "deploy", version, SPEC, f"/files/a/{version}", files)
    store.save_version("b", "b", "deploy", 1, SPEC, "/files/b/1", same)  # another app, the same content
    assert store._db.run("SELECT count(*) FROM bundles").rows == [(2,)]
    store.delete_versions("a", [1, 2])
    assert store.bundle(hashlib.sha256(same).hexdigest()) == same  # b's version 1 still names it
    store.delete_versions("b", [1])
    assert store.bundle(hashlib.sha256(same).hexdigest()) is None  # named by no version kept: gone
    assert reopen().bundle(hashlib.sha256(other).hexdigest()) == other  # and another server reads it


def test_a_version_saved_before_bundles_were_kept_gets_its_folder_packed_again(store: Store) -> None:
    save(store, "a")
    assert store.version("a", 1).bundle is None
    sha = store.set_version_bundle("a", 1, b"packed again")
    assert store.version("a", 1).bundle == sha and store.bundle(sha) == b"packed again"


def test_a_database_of_schema_2_gets_bundles_and_keeps_its_versions(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert migrate(conn, MIGRATIONS[:2]) == 2
        conn.execute("INSERT INTO versions (app_id, version, spec, files_dir, created_at) VALUES ('a', 1, '{}', '/f', 0)")
    finally:
        conn.close()
    store = Store(db)
    try:
        assert store.version("a", 1) == VersionRow("a", 1, {}, "/f", None)
        assert "bundles" in tables(db)
    finally:
        store.close()

"""The Postgres store's own parts on a real, throwaway Postgres: versioned migrations (one
runner at a time across servers), connection failures, and what recovery does with it. The
store URL parsing is pure and needs no database."""
from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from pgserver import PostgresServer
from wisp.server import recovery, store_pg
from wisp.server.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, StoreURL, parse_store_url, redact
from wisp.server.store_pg import PostgresDatabase, schema_version


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.encode())
        return cursor.fetchall() if cursor.description is not None else []


# Non-idempotent steps that also count their runs: a step run twice fails or shows twice.
STEPS = (
    "CREATE TABLE one (x BIGINT); CREATE TABLE runs (step BIGINT); INSERT INTO runs VALUES (1)",
    "SELECT pg_sleep(0.3); CREATE TABLE two (x BIGINT); INSERT INTO runs VALUES (2)",
    "CREATE TABLE three (x BIGINT); INSERT INTO runs VALUES (3)",
)


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return postgres.new_database()


pytestmark = pytest.mark.postgres


def test_a_fresh_database_gets_every_step(url: str) -> None:
    Store(PostgresDatabase(url)).close()
    assert query(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)] == [(len(MIGRATIONS),)]
    tables = {row[0] for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"schema_version", "apps", "versions", "call_tokens", "calls", "secrets", "version_secrets",
                      "proxy_tokens", "app_uids", "deploy_tokens", "bundles"}
    types = dict(query(url, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'calls'"))
    assert (types["created_at"], types["input"], types["attempts"]) == ("double precision", "bytea", "bigint")
    bundles = dict(query(url, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'bundles'"))
    assert bundles == {"sha256": "text", "data": "bytea", "created_at": "double precision"}


def test_reopening_applies_no_step(url: str) -> None:
    for _ in range(3):
        PostgresDatabase(url, STEPS).close()
    assert query(url, "SELECT step FROM runs ORDER BY step") == [(1,), (2,), (3,)]
    assert query(url, "SELECT version FROM schema_version") == [(3,)]


def test_a_new_step_is_applied_alone(url: str) -> None:
    PostgresDatabase(url, STEPS[:2]).close()
    db = PostgresDatabase(url, STEPS)
    try:
        assert schema_version(db.conn) == 3
    finally:
        db.close()
    assert query(url, "SELECT step FROM runs ORDER BY step") == [(1,), (2,), (3,)]


def test_servers_opening_a_fresh_database_at_once_run_each_step_once(url: str) -> None:
    opened: list[PostgresDatabase] = []
    failed: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresDatabase(url, STEPS))
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for db in opened:
        db.close()
    assert failed == [] and len(opened) == 4
    assert query(url, "SELECT step FROM runs ORDER BY step") == [(1,), (2,), (3,)]


def test_the_real_schema_opened_at_once_by_two_stores(url: str) -> None:
    stores: list[Store] = []
    start = threading.Barrier(2)

    def open_one() -> None:
        start.wait()
        stores.append(Store(PostgresDatabase(url)))

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert len(stores) == 2
        stores[0].save_version("a", "a", "deploy", 1, {}, "/f")
        assert [row.id for row in stores[1].apps()] == ["a"]
    finally:
        for store in stores:
            store.close()


def test_a_failing_step_leaves_the_database_at_the_step_before(url: str) -> None:
    with pytest.raises(StoreError, match="could not be brought up to date"):
        PostgresDatabase(url, (STEPS[0], "CREATE TABLE two (x BIGINT); CREATE TABLE one (x BIGINT)"))
    assert query(url, "SELECT version FROM schema_version") == [(1,)]
    assert query(url, "SELECT to_regclass('two') IS NULL") == [(True,)]  # step 2's first table went with it
    PostgresDatabase(url, STEPS).close()  # the lock was let go: the next open finishes the job
    assert query(url, "SELECT version FROM schema_version") == [(3,)]


def test_a_database_from_a_newer_wisp_is_refused(url: str) -> None:
    PostgresDatabase(url).close()
    query(url, f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer wisp"):
        PostgresDatabase(url)


def test_an_unreachable_postgres_says_where_without_the_password(postgres: PostgresServer) -> None:
    closed = f"postgresql://wisp:s3cret-pw@127.0.0.1:{_closed_port()}/postgres"
    with pytest.raises(StoreError, match="cannot connect to Postgres at") as caught:
        PostgresDatabase(closed)
    assert "s3cret-pw" not in str(caught.value) and "wisp:***@127.0.0.1" in str(caught.value)
    missing = postgres.url("no_such_database")
    with pytest.raises(StoreError, match='database "no_such_database" does not exist'):
        PostgresDatabase(missing)


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens there


def test_a_broken_connection_is_made_again_for_the_next_statement(url: str) -> None:
    store = Store(PostgresDatabase(url))
    try:
        store.save_version("a", "a", "deploy", 1, {}, "/f")
        query(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE datname = current_database() AND pid != pg_backend_pid()")
        with pytest.raises(psycopg.OperationalError):
            store.apps()  # the statement that meets the break fails...
        assert [row.id for row in store.apps()] == ["a"]  # ...the next one reconnects
    finally:
        store.close()


# -- recovery with a Postgres store ----------------------------------------------------------
def test_open_store_on_postgres_takes_no_file_backup(tmp_path: Path, url: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    where = parse_store_url(url, home)
    store = recovery.open_store(home, where)
    try:
        assert store.kind == "postgresql"
        store.save_version("a", "a", "deploy", 1, {}, str(home / "apps" / "a" / "v1"))
    finally:
        store.close()
    (home / "apps" / "a" / "v1").mkdir(parents=True)
    recovery.open_store(home, where).close()  # apps in the database and in the home: fine
    assert not (home / "state.db").exists() and recovery.backups(home) == []


def test_an_empty_postgres_beside_deployed_code_is_refused(tmp_path: Path, url: str) -> None:
    home = tmp_path / "home"
    (home / "apps" / "old" / "v1").mkdir(parents=True)
    with pytest.raises(recovery.DamagedState, match="holds no apps, but .* holds the code of 1 app"):
        recovery.open_store(home, parse_store_url(url, home))


def test_an_unreachable_postgres_stops_the_start_saying_what_to_do(tmp_path: Path) -> None:
    where = parse_store_url(f"postgresql://wisp:pw@127.0.0.1:{_closed_port()}/wisp", tmp_path)
    with pytest.raises(recovery.DamagedState) as caught:
        recovery.open_store(tmp_path, where)
    said = str(caught.value)
    assert "cannot connect" in said and "psql 'postgresql://wisp:***@127.0.0.1" in said and ":pw@" not in said


def test_backups_of_a_postgres_store_point_at_pg_dump(tmp_path: Path) -> None:
    refusal = recovery.backup_refusal(parse_store_url("postgresql://u:pw@db/wisp", tmp_path)) or ""
    assert "pg_dump" in refusal and "pw" not in refusal
    assert recovery.backup_refusal(parse_store_url(None, tmp_path)) is None


# -- store URLs (pure) ---------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (None, StoreURL("sqlite", "file:///h/state.db", Path("/h/state.db"))),
    ("", StoreURL("sqlite", "file:///h/state.db", Path("/h/state.db"))),
    ("sqlite:///data/wisp.db", StoreURL("sqlite", "file:///data/wisp.db", Path("/data/wisp.db"))),
    ("postgresql://u:p@db:5432/wisp", StoreURL("postgresql", "postgresql://u:p@db:5432/wisp")),
    ("postgres://db/wisp", StoreURL("postgresql", "postgres://db/wisp")),
])
def test_store_urls(value: str | None, expected: StoreURL) -> None:
    assert parse_store_url(value, Path("/h")) == expected


@pytest.mark.parametrize("value, said", [
    ("mysql://u:secret@db/wisp", "not a store URL wisp knows"),
    ("/var/wisp/state.db", "not a store URL wisp knows"),
    ("sqlite://host/state.db", "not an SQLite store URL"),
    ("sqlite://", "not an SQLite store URL"),
])
def test_bad_store_urls_say_what_to_give(value: str, said: str) -> None:
    with pytest.raises(ValueError, match=said) as caught:
        parse_store_url(value, Path("/h"))
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:p%40ss@db:5432/wisp?sslmode=require", "postgresql://u:***@db:5432/wisp?sslmode=require"),
    ("postgresql://u@db/wisp", "postgresql://u@db/wisp"),
    ("postgresql:///wisp", "postgresql:///wisp"),
])
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_without_psycopg_the_message_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_pg, "psycopg", None)
    with pytest.raises(StoreError, match=r"wisp\[postgres\]"):
        PostgresDatabase("postgresql://db/wisp")

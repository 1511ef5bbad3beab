"""The store on Postgres (`--store postgresql://...`): psycopg 3, one synchronous connection.

The server calls the store from its event loop, as it does SQLite's: each statement is short
and commits at once (autocommit), and the few that must commit together run in a transaction.
The schema is the same steps as SQLite's (`store.MIGRATIONS`), with Postgres's types, counted
in a `schema_version` table; servers opening one database at once take turns under an
advisory lock, so a step is never run twice.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from .store import MIGRATIONS, Result, StoreError, redact

try:
    import psycopg
except ImportError:  # the `postgres` extra is not installed
    psycopg = None  # type: ignore[assignment]  # None: store URLs of Postgres say to install the extra

# pg_advisory_lock's key for migrations: any constant every wisp agrees on ("wisp" in ASCII).
MIGRATION_LOCK = 0x77697370
CONNECT_TIMEOUT = 10  # seconds: an unreachable server fails the start instead of hanging it

_TYPES = {"REAL": "DOUBLE PRECISION", "BLOB": "BYTEA", "INTEGER": "BIGINT", "TEXT": 'TEXT COLLATE "C"'}


def postgres_step(step: str) -> str:
    """A migration step in Postgres's types: float8 times (REAL is float4 there), BYTEA, 64-bit
    integers, and text compared byte by byte as SQLite does (so `ORDER BY id` agrees whatever
    the database's locale)."""
    return re.sub(r"\b(REAL|BLOB|INTEGER|TEXT)\b", lambda m: _TYPES[m.group(1)], step)


POSTGRES_MIGRATIONS: tuple[str, ...] = tuple(postgres_step(step) for step in MIGRATIONS)


def _require_psycopg() -> None:
    if psycopg is None:
        raise StoreError("a postgresql:// store needs psycopg, which is not installed: install wisp's `postgres` "
                         "extra (`pip install 'wisp[postgres]'`), or use the default SQLite store")


class PostgresDatabase:
    kind = "postgresql"

    def __init__(self, url: str, migrations: tuple[str, ...] = POSTGRES_MIGRATIONS) -> None:
        _require_psycopg()
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self.url = url
        self.conn = self._connect()
        try:
            migrate(self.conn, migrations)
        except psycopg.Error as exc:
            self.conn.close()
            raise StoreError(f"its schema could not be brought up to date: {exc}") from None
        except StoreError:
            self.conn.close()
            raise

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            # libpq's own words (which never include the password), without the URL itself
            reason = str(exc).strip().replace(self.url, redact(self.url))
            raise StoreError(f"cannot connect to Postgres at {redact(self.url)}: {reason}") from None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, made again if the last one broke (Postgres restarted): the statement
        that met the break failed, the next one gets a fresh connection."""
        if self.conn.closed:
            self.conn = self._connect()
        return self.conn

    def run(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self._connection().execute(_placeholders(sql), params)
        return Result(cursor.fetchall() if cursor.description is not None else [], cursor.rowcount)

    def run_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        with self._connection().cursor() as cursor:
            cursor.executemany(_placeholders(sql), params)

    @contextlib.contextmanager
    def transaction(self, *, exclusive: str | None = None) -> Iterator[None]:
        conn = self._connection()
        with conn.transaction():
            if exclusive is not None:  # as SQLite's BEGIN IMMEDIATE: writers of that table wait their turn
                conn.execute(f"LOCK TABLE {exclusive} IN SHARE ROW EXCLUSIVE MODE")
            yield

    def close(self) -> None:
        self.conn.close()


def _placeholders(sql: str) -> str:
    """The store's `?` parameters as psycopg's `%s` (its SQL has no other `?` or `%`)."""
    return sql.replace("?", "%s")


def schema_version(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """How many migration steps the database has had (0: none, or not a wisp database yet)."""
    found = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not found or not found[0]:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[tuple[Any, ...]], migrations: tuple[str, ...] = POSTGRES_MIGRATIONS) -> int:
    """Apply the steps the database has not had, each in its own transaction with the version
    it reaches, under a session advisory lock: a server that opens the database while another
    migrates it waits, then finds the steps done. The version it is at now."""
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        with conn.transaction():
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            if conn.execute("SELECT count(*) FROM schema_version").fetchone() == (0,):
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        current = schema_version(conn)
        if current > len(migrations):
            raise StoreError(f"it has schema version {current}, written by a newer wisp (this one knows up to "
                             f"version {len(migrations)})")
        for number in range(current, len(migrations)):
            with conn.transaction():  # the step and its version number commit together, or neither does
                conn.execute(migrations[number].encode())
                conn.execute("UPDATE schema_version SET version = %s", (number + 1,))
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return len(migrations)

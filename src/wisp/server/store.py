"""Persistence for apps and their versions: what must survive a server restart.

One `Store` over two databases, chosen by URL (`open_database`): the embedded SQLite file
(`$WISP_HOME/state.db`, the default) or Postgres (`postgresql://...`, `store_pg`, shared by
servers). Every method's SQL is written once, in the subset both speak, with `?` parameters;
a `Database` runs it (the Postgres one turns `?` into `%s`) and knows its own transactions.

A deployed version's files (the tar.gz its deploy sent) are kept in `bundles`, once per content
(sha256), and its `versions` row names them: a server that lacks the version's folder (another
machine's, or a home that lost `apps/`) unpacks it again from there.

The schema is versioned: `MIGRATIONS` is the ordered list of steps, and `PRAGMA user_version`
(SQLite) or the `schema_version` table (Postgres) says how many of them a database has had.
Opening a store applies the missing ones, each in its own transaction with the version it reaches.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    mode TEXT NOT NULL,            -- 'deploy' (persistent) or 'serve' (ephemeral)
    state TEXT NOT NULL,           -- 'running' or 'stopped'
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    app_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    spec TEXT NOT NULL,
    files_dir TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (app_id, version)
);
CREATE TABLE IF NOT EXISTS call_tokens (  -- what an app's containers and runs present to call its functions
    app_id TEXT PRIMARY KEY,
    token TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (        -- spawned calls: they and their results outlive a restart
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    function TEXT NOT NULL,
    state TEXT NOT NULL,                  -- 'pending', 'done', 'failed' or 'cancelled'
    input BLOB,                           -- dropped once the call has ended
    answer BLOB,                          -- the frames the caller decodes (wisp._call_wire)
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS secrets (   -- values: state.db is mode 0600, read by the server only
    name TEXT PRIMARY KEY,
    "values" TEXT NOT NULL,        -- JSON object KEY -> value
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS version_secrets (  -- the env a version was deployed with (values pinned)
    app_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    env TEXT NOT NULL,             -- JSON object function name -> {KEY: value}
    PRIMARY KEY (app_id, version)
);
CREATE TABLE IF NOT EXISTS proxy_tokens (  -- requires_proxy_auth endpoints take these (Modal-Key/-Secret)
    name TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,              -- the Modal-Key value, wk-...
    secret_sha256 TEXT NOT NULL,           -- never the secret itself
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class AppRow:
    id: str
    name: str
    mode: str
    state: str
    version: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class CallRow:
    id: str
    app_id: str
    function: str
    state: str
    input: bytes | None
    answer: bytes | None
    attempts: int
    created_at: float
    finished_at: float | None


_CALL_COLUMNS = "id, app_id, function, state, input, answer, attempts, created_at, finished_at"


@dataclass(frozen=True)
class VersionRow:
    app_id: str
    version: int
    spec: dict[str, Any]
    files_dir: str  # where the deploying server unpacked it
    bundle: str | None = None  # sha256 of its files in `bundles`; None: deployed before wisp kept them


@dataclass(frozen=True)
class SecretRow:
    name: str
    values: dict[str, str]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class DeployTokenRow:
    name: str
    app_name: str
    token_sha256: str
    created_at: float


@dataclass(frozen=True)
class ProxyTokenRow:
    name: str
    key: str
    secret_sha256: str
    created_at: float


def restrict(path: Path) -> None:
    """state.db holds secret values: only the server's user may read it (and its WAL files)."""
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if candidate.exists():
            os.chmod(candidate, 0o600)


# Step i takes a database from user_version i to i + 1. A released step never changes: a new
# table or column is a new step at the end (its SQL, run in one transaction).
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA,  # 1: the tables of before versioning; IF NOT EXISTS, so an unversioned database keeps its rows
    # 2: per-app uids and deploy tokens (issue 11, isolation)
    """
CREATE TABLE app_uids (                    -- the uid (= gid) each app id's containers run as
    app_id TEXT PRIMARY KEY,
    uid INTEGER NOT NULL UNIQUE
);
CREATE TABLE deploy_tokens (               -- tokens that may deploy/serve/stop one app name only
    name TEXT PRIMARY KEY,
    app_name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,     -- never the token itself
    created_at REAL NOT NULL
);
""",
    # 3: a deploy's files kept in the store, so any server sharing it can serve the version (issue 14)
    """
CREATE TABLE bundles (                     -- a deploy's files (the tar.gz it was sent), by content
    sha256 TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created_at REAL NOT NULL
);
ALTER TABLE versions ADD COLUMN bundle TEXT;  -- its bundle's sha256; null: deployed before bundles were kept
""",
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The database cannot be used as it is (unreadable, damaged, not wisp's, or too new)."""


@dataclass(frozen=True)
class DatabaseInfo:
    user_version: int
    tables: frozenset[str]

    @property
    def empty(self) -> bool:
        """No schema at all: a database that was never created, or lost its contents."""
        return not self.tables


def inspect(path: Path) -> DatabaseInfo:
    """What an existing database holds, checked readable page by page (`quick_check`); only
    read (a committed WAL is checkpointed on close, as any open does). StoreError says why it
    cannot be used."""
    old_umask = os.umask(0o077)  # the -wal/-shm files this may create
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from None
    finally:
        os.umask(old_umask)
    try:
        user_version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = frozenset(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from None
    finally:
        db.close()
    if problems != ["ok"]:
        raise StoreError("; ".join(problems[:3]))
    if user_version > SCHEMA_VERSION:
        raise StoreError(f"it has schema version {user_version}, written by a newer wisp (this one knows up to "
                         f"version {SCHEMA_VERSION})")
    if tables and "apps" not in tables:
        raise StoreError(f"it is an SQLite database, but not wisp's (no `apps` table; tables: {', '.join(sorted(tables))})")
    return DatabaseInfo(user_version, tables)


def migrate(db: sqlite3.Connection, migrations: tuple[str, ...] = MIGRATIONS) -> int:
    """Apply the steps a database has not had yet; the version it is at now."""
    current = int(db.execute("PRAGMA user_version").fetchone()[0])
    if current > len(migrations):
        raise StoreError(f"it has schema version {current}, written by a newer wisp (this one knows up to "
                         f"version {len(migrations)})")
    for number in range(current, len(migrations)):
        try:  # the step and its version number commit together, or neither does
            db.executescript(f"BEGIN IMMEDIATE;\n{migrations[number]};\nPRAGMA user_version = {number + 1};\nCOMMIT;")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return len(migrations)


# -- the databases a Store runs on ----------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """A statement's rows (all fetched: the store's queries are small) and how many rows it changed."""
    rows: list[tuple[Any, ...]]
    rowcount: int

    def one(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


class Database(Protocol):
    """One connection the Store runs its SQL on: `?` parameters, the SQL both databases speak."""

    kind: str  # "sqlite" or "postgresql"
    errors: tuple[type[Exception], ...]  # what a failed statement raises (a duplicate key among them)

    def run(self, sql: str, params: Sequence[Any] = ()) -> Result: ...

    def run_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None: ...

    def transaction(self, *, exclusive: str | None = None) -> contextlib.AbstractContextManager[None]:
        """Statements that commit together; `exclusive`: a table no other writer may change meanwhile."""
        ...

    def close(self) -> None: ...


class SQLiteDatabase:
    kind = "sqlite"
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        old_umask = os.umask(0o077)  # the files sqlite creates now are 0600 from the start
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None)
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                migrate(self.db)
            except (sqlite3.Error, StoreError) as exc:
                self.db.close()
                raise StoreError(str(exc)) from None
        finally:
            os.umask(old_umask)
        restrict(path)

    def run(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self.db.execute(sql, params)
        return Result(cursor.fetchall(), cursor.rowcount)

    def run_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, params)

    @contextlib.contextmanager
    def transaction(self, *, exclusive: str | None = None) -> Iterator[None]:
        with self.db:  # commits, or rolls back on an exception
            self.db.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")  # IMMEDIATE: the write lock now
            yield

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class StoreURL:
    """Where the store is: `sqlite:///path` (the default: $WISP_HOME/state.db) or `postgresql://...`."""
    kind: str  # "sqlite" or "postgresql"
    url: str
    path: Path | None = None  # the SQLite file

    @property
    def shown(self) -> str:
        """The URL without its password, for messages and logs."""
        return redact(self.url)


SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}


def parse_store_url(value: str | None, home: Path) -> StoreURL:
    """`--store` / WISP_STORE; None or empty: the SQLite file in `home`. ValueError says what is wrong."""
    if not value:
        path = home / "state.db"
        return StoreURL("sqlite", path.as_uri(), path)
    parts = urlsplit(value)
    kind = SCHEMES.get(parts.scheme)
    if kind is None:
        raise ValueError(f"{redact(value)!r} is not a store URL wisp knows: give sqlite:///PATH (the default is "
                         f"sqlite://{home / 'state.db'}) or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    if kind == "postgresql":
        return StoreURL(kind, value)
    if parts.netloc or not parts.path or parts.query:
        raise ValueError(f"{value!r} is not an SQLite store URL: give an absolute file path after three slashes, "
                         f"e.g. sqlite://{home / 'state.db'}")
    path = Path(unquote(parts.path))
    return StoreURL(kind, path.as_uri(), path)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc[-1]}"))


def open_database(where: StoreURL) -> Database:
    """The database of a store URL, migrated. StoreError says why it cannot be used."""
    if where.kind == "postgresql":
        from . import store_pg  # psycopg is the `postgres` extra: imported only when asked for
        return store_pg.PostgresDatabase(where.url)
    assert where.path is not None
    return SQLiteDatabase(where.path)


_APP_COLUMNS = "id, name, mode, state, version, created_at, updated_at"


class Store:
    """Apps, versions, calls, secrets and tokens, on SQLite (a Path) or any `Database`."""

    def __init__(self, where: Path | Database) -> None:
        self._db: Database = SQLiteDatabase(where) if isinstance(where, Path) else where

    @property
    def kind(self) -> str:
        return self._db.kind

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """What a failed statement raises on this database."""
        return self._db.errors

    def close(self) -> None:
        self._db.close()

    def next_version(self, app_id: str) -> int:
        row = self._db.run("SELECT MAX(version) FROM versions WHERE app_id = ?", (app_id,)).one()
        return int((row[0] if row else None) or 0) + 1

    def save_version(self, app_id: str, name: str, mode: str, version: int, spec: dict[str, Any], files_dir: str,
                     files: bytes | None = None) -> None:
        """The app's new current version; `files`: the tar.gz it was deployed from, kept (once per
        content) so that servers without `files_dir` can unpack it again."""
        now = time.time()
        with self._db.transaction():
            bundle = None if files is None else self._put_bundle(files, now)
            self._db.run(
                "INSERT INTO versions (app_id, version, spec, files_dir, created_at, bundle) VALUES (?, ?, ?, ?, ?, ?)",
                (app_id, version, json.dumps(spec), files_dir, now, bundle),
            )
            self._db.run(
                "INSERT INTO apps (id, name, mode, state, version, created_at, updated_at) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "state = 'running', version = excluded.version, mode = excluded.mode, updated_at = excluded.updated_at",
                (app_id, name, mode, version, now, now),
            )

    def set_state(self, app_id: str, state: str) -> None:
        self._db.run("UPDATE apps SET state = ?, updated_at = ? WHERE id = ?", (state, time.time(), app_id))

    def apps(self) -> list[AppRow]:
        return [AppRow(*row) for row in self._db.run(f"SELECT {_APP_COLUMNS} FROM apps ORDER BY id").rows]

    def app(self, app_id: str) -> AppRow | None:
        row = self._db.run(f"SELECT {_APP_COLUMNS} FROM apps WHERE id = ?", (app_id,)).one()
        return AppRow(*row) if row else None

    def version(self, app_id: str, version: int) -> VersionRow:
        """StoreError when the row is missing or its spec is not JSON (a damaged record)."""
        row = self._db.run("SELECT spec, files_dir, bundle FROM versions WHERE app_id = ? AND version = ?",
                           (app_id, version)).one()
        if row is None:
            raise StoreError(f"there is no record of its version {version}")
        try:
            spec = json.loads(row[0])
        except (TypeError, ValueError) as exc:
            raise StoreError(f"the spec of its version {version} is not valid JSON ({exc})") from None
        return VersionRow(app_id, version, spec, row[1], row[2])

    def version_history(self, app_id: str) -> list[tuple[int, float]]:
        """(version, when it was deployed) of the versions kept, newest first."""
        rows = self._db.run("SELECT version, created_at FROM versions WHERE app_id = ? ORDER BY version DESC",
                            (app_id,)).rows
        return [(int(v), float(t)) for v, t in rows]

    def version_numbers(self, app_id: str) -> list[int]:
        rows = self._db.run("SELECT version FROM versions WHERE app_id = ? ORDER BY version", (app_id,)).rows
        return [int(row[0]) for row in rows]

    def delete_versions(self, app_id: str, versions: list[int]) -> None:
        """Forget old versions: their rows, the secret values pinned for them and the bundles no
        version kept names any more, together."""
        with self._db.transaction():
            for table in ("versions", "version_secrets"):
                self._db.run_many(f"DELETE FROM {table} WHERE app_id = ? AND version = ?",
                                  [(app_id, version) for version in versions])
            self._db.run("DELETE FROM bundles WHERE NOT EXISTS (SELECT 1 FROM versions WHERE versions.bundle = bundles.sha256)")

    # -- bundles: the files of each version, by content (issue 14) -----------------------------------
    def _put_bundle(self, data: bytes, now: float) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self._db.run("INSERT INTO bundles (sha256, data, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                     (sha, data, now))
        return sha

    def bundle(self, sha256: str) -> bytes | None:
        """A version's files as they were deployed (tar.gz); None when they are not kept."""
        row = self._db.run("SELECT data FROM bundles WHERE sha256 = ?", (sha256,)).one()
        return None if row is None else bytes(row[0])

    def set_version_bundle(self, app_id: str, version: int, files: bytes) -> str:
        """Keep the files of a version saved without them (before bundles were kept); their sha256."""
        with self._db.transaction():
            sha = self._put_bundle(files, time.time())
            self._db.run("UPDATE versions SET bundle = ? WHERE app_id = ? AND version = ?", (sha, app_id, version))
        return sha

    # -- calls between functions -------------------------------------------------------------
    def call_token(self, app_id: str, make: Callable[[], str]) -> str:
        """The app's call token, made on its first deploy and kept across versions and restarts
        (servers sharing a database that make one at once keep the first written)."""
        row = self._db.run("SELECT token FROM call_tokens WHERE app_id = ?", (app_id,)).one()
        if row:
            return str(row[0])
        self._db.run("INSERT INTO call_tokens (app_id, token) VALUES (?, ?) ON CONFLICT DO NOTHING", (app_id, make()))
        row = self._db.run("SELECT token FROM call_tokens WHERE app_id = ?", (app_id,)).one()
        assert row is not None
        return str(row[0])

    def add_call(self, call_id: str, app_id: str, function: str, data: bytes) -> None:
        self._db.run(
            "INSERT INTO calls (id, app_id, function, state, input, created_at) VALUES (?, ?, ?, 'pending', ?, ?)",
            (call_id, app_id, function, data, time.time()),
        )

    def call(self, call_id: str) -> CallRow | None:
        row = self._db.run(f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = ?", (call_id,)).one()
        return CallRow(*row) if row else None

    def recent_calls(self, app_id: str, limit: int = 50) -> list[CallRow]:
        """An app's spawned calls, the newest first (running ones and those kept after they ended)."""
        rows = self._db.run(f"SELECT {_CALL_COLUMNS} FROM calls WHERE app_id = ? ORDER BY created_at DESC LIMIT ?",
                            (app_id, limit)).rows
        return [CallRow(*row) for row in rows]

    def pending_calls(self) -> list[CallRow]:
        rows = self._db.run(f"SELECT {_CALL_COLUMNS} FROM calls WHERE state = 'pending' ORDER BY created_at").rows
        return [CallRow(*row) for row in rows]

    def count_attempt(self, call_id: str) -> int:
        self._db.run("UPDATE calls SET attempts = attempts + 1 WHERE id = ?", (call_id,))
        row = self._db.run("SELECT attempts FROM calls WHERE id = ?", (call_id,)).one()
        return int(row[0]) if row else 0

    def finish_call(self, call_id: str, state: str, answer: bytes | None) -> bool:
        """Record a pending call's end; False if it had ended already (cancelled meanwhile)."""
        result = self._db.run(
            "UPDATE calls SET state = ?, answer = ?, input = NULL, finished_at = ? WHERE id = ? AND state = 'pending'",
            (state, answer, time.time(), call_id),
        )
        return result.rowcount == 1

    def expire_calls(self, before: float) -> int:
        return self._db.run("DELETE FROM calls WHERE state != 'pending' AND finished_at < ?", (before,)).rowcount

    # -- secrets -------------------------------------------------------------------------------
    def secrets(self) -> list[SecretRow]:
        rows = self._db.run('SELECT name, "values", created_at, updated_at FROM secrets ORDER BY name').rows
        return [SecretRow(name, json.loads(values), created, updated) for name, values, created, updated in rows]

    def secret(self, name: str) -> SecretRow | None:
        row = self._db.run('SELECT name, "values", created_at, updated_at FROM secrets WHERE name = ?', (name,)).one()
        return SecretRow(row[0], json.loads(row[1]), row[2], row[3]) if row else None

    def put_secret(self, name: str, values: dict[str, str], *, replace: bool) -> bool:
        """False when it exists and `replace` is not set."""
        now = time.time()
        if not replace:
            result = self._db.run('INSERT INTO secrets (name, "values", created_at, updated_at) VALUES (?, ?, ?, ?) '
                                  "ON CONFLICT DO NOTHING", (name, json.dumps(values), now, now))
            return result.rowcount == 1
        self._db.run('INSERT INTO secrets (name, "values", created_at, updated_at) VALUES (?, ?, ?, ?) '
                     'ON CONFLICT(name) DO UPDATE SET "values" = excluded."values", updated_at = excluded.updated_at',
                     (name, json.dumps(values), now, now))
        return True

    def delete_secret(self, name: str) -> bool:
        return self._db.run("DELETE FROM secrets WHERE name = ?", (name,)).rowcount == 1

    def save_version_secrets(self, app_id: str, version: int, env: dict[str, dict[str, str]]) -> None:
        self._db.run("INSERT INTO version_secrets (app_id, version, env) VALUES (?, ?, ?) "
                     "ON CONFLICT(app_id, version) DO UPDATE SET env = excluded.env", (app_id, version, json.dumps(env)))

    def version_secrets(self, app_id: str, version: int) -> dict[str, dict[str, str]]:
        row = self._db.run("SELECT env FROM version_secrets WHERE app_id = ? AND version = ?", (app_id, version)).one()
        return json.loads(row[0]) if row else {}

    # -- proxy tokens ---------------------------------------------------------------------------
    def proxy_tokens(self) -> list[ProxyTokenRow]:
        rows = self._db.run("SELECT name, key, secret_sha256, created_at FROM proxy_tokens ORDER BY created_at").rows
        return [ProxyTokenRow(*row) for row in rows]

    def add_proxy_token(self, name: str, key: str, secret_sha256: str) -> bool:
        """False when a token of that name (or key) exists."""
        result = self._db.run("INSERT INTO proxy_tokens (name, key, secret_sha256, created_at) VALUES (?, ?, ?, ?) "
                              "ON CONFLICT DO NOTHING", (name, key, secret_sha256, time.time()))
        return result.rowcount == 1

    def remove_proxy_token(self, name_or_key: str) -> ProxyTokenRow | None:
        row = self._db.run("SELECT name, key, secret_sha256, created_at FROM proxy_tokens WHERE name = ? OR key = ?",
                           (name_or_key, name_or_key)).one()
        if row is None:
            return None
        self._db.run("DELETE FROM proxy_tokens WHERE name = ?", (row[0],))
        return ProxyTokenRow(*row)

    # -- app uids and deploy tokens (issue 11) ----------------------------------------------------
    def app_uids(self) -> list[tuple[str, int]]:
        """Every app id's uid, as (app id, uid)."""
        return [(str(r[0]), int(r[1])) for r in self._db.run("SELECT app_id, uid FROM app_uids ORDER BY uid").rows]

    def app_uid(self, app_id: str, allocate: Callable[[list[int]], int]) -> int:
        """The app id's uid: allocated (from the uids taken) on first use, then kept for good."""
        row = self._db.run("SELECT uid FROM app_uids WHERE app_id = ?", (app_id,)).one()
        if row:
            return int(row[0])
        with self._db.transaction(exclusive="app_uids"):
            row = self._db.run("SELECT uid FROM app_uids WHERE app_id = ?", (app_id,)).one()
            if row:  # another server sharing the database took one for it meanwhile
                return int(row[0])
            taken = [int(r[0]) for r in self._db.run("SELECT uid FROM app_uids").rows]
            uid = allocate(taken)
            self._db.run("INSERT INTO app_uids (app_id, uid) VALUES (?, ?)", (app_id, uid))
        return uid

    def deploy_tokens(self) -> list[DeployTokenRow]:
        rows = self._db.run("SELECT name, app_name, token_sha256, created_at FROM deploy_tokens ORDER BY created_at").rows
        return [DeployTokenRow(*row) for row in rows]

    def add_deploy_token(self, name: str, app_name: str, token_sha256: str) -> bool:
        """False when a token of that name exists."""
        result = self._db.run("INSERT INTO deploy_tokens (name, app_name, token_sha256, created_at) "
                              "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", (name, app_name, token_sha256, time.time()))
        return result.rowcount == 1

    def remove_deploy_token(self, name: str) -> DeployTokenRow | None:
        row = self._db.run("SELECT name, app_name, token_sha256, created_at FROM deploy_tokens WHERE name = ?",
                           (name,)).one()
        if row is None:
            return None
        self._db.run("DELETE FROM deploy_tokens WHERE name = ?", (name,))
        return DeployTokenRow(*row)

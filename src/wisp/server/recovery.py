"""Opening the store at start without ever losing it silently, and its backups.

A database that cannot be read, or one that is empty while `apps/` holds deployed code, stops
the start with a message naming the file, the newest backup and the command that restores it.
Backups are SQLite online backups (consistent while the server writes, WAL included), 0600.
A Postgres store (`--store postgresql://...`) is checked the same way at start; its backups are
Postgres's own (pg_dump), so `backup_refusal` says so instead of copying a file.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import time
from pathlib import Path

from .store import Store, StoreError, StoreURL, inspect, open_database, parse_store_url

STATE_FILE = "state.db"
BACKUPS = "backups"
START_BACKUPS_KEPT = 5  # the automatic backups taken at each start; those made by `wisp server backup` stay
_START_SUFFIX = "-start"


class DamagedState(Exception):
    """The server must not start on this database; the message says why and what to do."""


def open_store(home: Path, where: StoreURL | None = None) -> Store:
    """The store of this home (`where`: --store, else $WISP_HOME/state.db), checked and migrated,
    with a backup of an SQLite file taken; DamagedState when starting on it would fail or forget apps."""
    where = where or parse_store_url(None, home)
    if where.kind == "postgresql":
        return _open_postgres(home, where)
    assert where.path is not None
    path = where.path
    code = app_folders(home)
    if path.exists():
        try:
            info = inspect(path)
        except StoreError as exc:
            raise DamagedState(unreadable_message(home, str(exc), path)) from None
        empty = info.empty
    else:
        empty = True
    if empty and code:
        raise DamagedState(empty_message(home, code, missing=not path.exists(), path=path))
    try:
        store = Store(path)
    except StoreError as exc:
        raise DamagedState(unreadable_message(home, str(exc), path)) from None
    if store.apps() or store.secrets() or store.proxy_tokens():  # a fresh home has nothing worth keeping yet
        take_backup(home, suffix=_START_SUFFIX, source=path)
        prune_start_backups(home)
    return store


def _open_postgres(home: Path, where: StoreURL) -> Store:
    try:
        store = Store(open_database(where))
    except StoreError as exc:
        raise DamagedState(f"wisp server: the Postgres store at {where.shown} cannot be used: {exc}. The server did "
                           f"not start.\nCheck that Postgres runs there and that the URL's user, password, host, port "
                           f"and database are right (`psql '{where.shown}'` should connect, with the password), or "
                           "start without --store (and WISP_STORE unset) to use the embedded SQLite store.") from None
    code = app_folders(home)
    if code and not store.apps():
        store.close()
        shown = ", ".join(code[:5]) + (f" and {len(code) - 5} more" if len(code) > 5 else "")
        raise DamagedState(f"wisp server: the Postgres store at {where.shown} holds no apps, but {home / 'apps'} holds "
                           f"the code of {len(code)} app(s) ({shown}): starting would forget them. The server did not "
                           "start.\nPoint --store at the database these apps were deployed with; or, to move to this "
                           "database, start on the old store, and deploy the apps again once on this one (wisp does "
                           "not copy a store from one database to another).")
    return store


def backup_refusal(where: StoreURL) -> str | None:
    """Why `wisp server backup/restore` cannot work on this store, with what to use; None: they can."""
    if where.kind == "postgresql":
        return (f"The store is Postgres ({where.shown}): backups of a Postgres store are Postgres's own: use pg_dump "
                f"(`pg_dump -Fc '{where.shown}' > wisp.dump`) and pg_restore to restore it, with the server stopped.")
    return None


def app_folders(home: Path) -> list[str]:
    """Apps whose code is kept under apps/ (a version folder or more each)."""
    apps = home / "apps"
    if not apps.is_dir():
        return []
    return sorted(p.name for p in apps.iterdir() if p.is_dir() and any(v.name.startswith("v") for v in p.iterdir()))


def unreadable_message(home: Path, reason: str, path: Path | None = None) -> str:
    path = path or home / STATE_FILE
    return (f"wisp server: the state database {path} cannot be used: {reason}. The server did not start.\n"
            + _what_to_do(home, path))


def empty_message(home: Path, code: list[str], *, missing: bool, path: Path | None = None) -> str:
    path = path or home / STATE_FILE
    shown = ", ".join(code[:5]) + (f" and {len(code) - 5} more" if len(code) > 5 else "")
    return (f"wisp server: the state database {path} is {'missing' if missing else 'empty'}, but {home / 'apps'} "
            f"holds the code of {len(code)} app(s) ({shown}): the state was lost or damaged, and starting would "
            "forget every deployed app. The server did not start.\n"
            + _what_to_do(home, path))


def _what_to_do(home: Path, path: Path) -> str:
    newest = newest_backup(home)
    if newest is None:
        old = shlex.quote(str(home / "old-state"))
        moved = " ".join(shlex.quote(str(p)) for p in [*_with_wal(path), home / "apps"] if p.exists())
        return (f"There is no backup in {home / BACKUPS} to restore. To start afresh deliberately (deployed apps, "
                f"secrets and tokens are forgotten; deploy them again), move the old state away: "
                f"`mkdir {old} && mv {moved} {old}/`, then `wisp server start`.")
    taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(newest.stat().st_mtime))
    store = "" if path == home / STATE_FILE else f" --store {shlex.quote(path.as_uri())}"
    return (f"Restore the newest backup, {newest} (taken {taken}): `wisp server restore{store} {newest}`, then "
            "`wisp server start`. (`wisp server restore` keeps the damaged file beside it.)")


# -- backups ---------------------------------------------------------------------------------
def backups(home: Path) -> list[Path]:
    """The backups under $WISP_HOME/backups, oldest first."""
    folder = home / BACKUPS
    if not folder.is_dir():
        return []
    return sorted(folder.glob("state-*.db"), key=lambda p: (p.stat().st_mtime, p.name))


def newest_backup(home: Path) -> Path | None:
    found = backups(home)
    return found[-1] if found else None


def take_backup(home: Path, target: Path | None = None, *, suffix: str = "", source: Path | None = None) -> Path:
    """A consistent copy of state.db (or `source`: the SQLite backup API: the server may be
    writing), 0600, written under another name and renamed, so a backup that exists is whole.
    StoreError when it cannot be read."""
    source = source or home / STATE_FILE
    if not source.exists():
        raise StoreError(f"there is no state database at {source}")
    if target is None:
        target = _new_backup_path(home, suffix)
    elif target.is_dir():
        target = _new_backup_path(home, suffix, folder=target)
    partial = target.with_name(f".{target.name}.partial")
    old_umask = os.umask(0o077)
    try:
        partial.unlink(missing_ok=True)
        copy_database(source, partial)
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    except (sqlite3.Error, StoreError) as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(str(exc)) from None
    finally:
        os.umask(old_umask)
    return target


def copy_database(source: Path, target: Path) -> None:
    """source -> target through the backup API, then checked; target is a single file
    (rollback journal mode), so it can be copied by hand."""
    src = sqlite3.connect(source.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
    try:
        dst = sqlite3.connect(str(target), isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    inspect(target)  # a damaged source gives a damaged copy: say so instead of keeping it


def _new_backup_path(home: Path, suffix: str, folder: Path | None = None) -> Path:
    folder = folder or home / BACKUPS
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = folder / f"state-{stamp}{suffix}.db"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"state-{stamp}-{n}{suffix}.db"
    return target


def prune_start_backups(home: Path, keep: int = START_BACKUPS_KEPT) -> None:
    automatic = [p for p in backups(home) if p.stem.endswith(_START_SUFFIX)]
    for old in automatic[:-keep]:
        old.unlink(missing_ok=True)


def restore(home: Path, backup: Path, path: Path | None = None) -> Path | None:
    """Put `backup` in place of state.db (the server must be stopped). The file it replaces, if
    any, is kept beside it as state.db.replaced-<time> (its -wal/-shm with it: a stale WAL left
    next to the restored file would be replayed into it). The kept file's path, or None."""
    inspect(backup)  # StoreError: not a usable wisp database
    path = path or home / STATE_FILE
    kept = None
    if any(p.exists() for p in _with_wal(path)):
        kept = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
        for current, aside in zip(_with_wal(path), _with_wal(kept)):
            if current.exists():
                os.replace(current, aside)
    partial = path.with_name(f".{path.name}.partial")
    old_umask = os.umask(0o077)
    try:
        shutil.copyfile(backup, partial)
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    finally:
        os.umask(old_umask)
    return kept


def _with_wal(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]

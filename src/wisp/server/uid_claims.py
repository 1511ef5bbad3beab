"""Which store on this machine holds each app uid, so that two wisp servers with stores of
their own (two WISP_HOMEs, or Postgres databases) never run two apps as one uid.

Each server's store hands out app uids from the same range (`isolation.uid_settings`) and keeps
them for good. Without a word between stores, the first app of one server and the first app of
another would share a uid: each could read the other's code and signal its processes. So a root
server claims every uid it holds in a folder of root's (`/var/lib/wisp/app-uids`,
`WISP_UID_CLAIMS`): one file per uid, naming its store, made with O_EXCL under a lock. A new
app's uid skips the ones other stores claimed. A claim by a SQLite store whose file is gone is
stale and may be taken; a Postgres store's never is.

`stale` is pure (a table in tests/unit/test_uid_claims.py); `UidClaims` touches the disk.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from .store import StoreURL

CLAIMS_ENV = "WISP_UID_CLAIMS"
DEFAULT_FOLDER = Path("/var/lib/wisp/app-uids")
_SQLITE = "sqlite:"


def owner_of(where: StoreURL) -> str:
    """How a claim names a store: its SQLite file (resolved), or its Postgres URL without the password."""
    if where.path is not None:
        return _SQLITE + str(where.path.resolve())
    return where.shown


def stale(holder: str, exists: Callable[[str], bool] = os.path.exists) -> bool:
    """A claim nobody can hold any more: its SQLite store is gone (a removed WISP_HOME). An
    unreadable claim is not stale (nothing is taken on a guess)."""
    return holder.startswith(_SQLITE) and not exists(holder[len(_SQLITE):])


class UidClaims:
    def __init__(self, folder: Path, owner: str) -> None:
        self.folder = folder
        self.owner = owner

    @classmethod
    def open(cls, environ: Mapping[str, str], where: StoreURL) -> tuple[UidClaims | None, str | None]:
        """The claims folder (made 0700 if missing), or None and why: then uids are not
        coordinated with other servers on this machine, which the caller says."""
        folder = Path(environ.get(CLAIMS_ENV) or DEFAULT_FOLDER)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            (folder / ".lock").touch(mode=0o600)
        except OSError as exc:
            return None, (f"cannot keep the app uids' claims in {folder} ({exc.strerror}): another wisp server on "
                          f"this machine could give one of its apps the uid of one of ours. Make the folder "
                          f"writable by root, or name another with {CLAIMS_ENV}.")
        return cls(folder, owner_of(where)), None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / ".lock", "r+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _holder(self, uid: int) -> str | None:
        try:
            return (self.folder / str(uid)).read_text()
        except FileNotFoundError:
            return None

    def others(self) -> set[int]:
        """Uids that other stores hold (stale claims left out)."""
        taken = set()
        with self._locked():
            for path in self.folder.iterdir():
                if path.name.isdigit():
                    holder = self._holder(int(path.name))
                    if holder is not None and holder != self.owner and not stale(holder):
                        taken.add(int(path.name))
        return taken

    def claim(self, uid: int) -> str | None:
        """Claim `uid` for this store: None when it is ours now, else the store that holds it."""
        path = self.folder / str(uid)
        with self._locked():
            holder = self._holder(uid)
            if holder is not None and holder != self.owner and not stale(holder):
                return holder
            if holder != self.owner:
                partial = path.with_name(f".{uid}.new")
                partial.write_text(self.owner)
                os.chmod(partial, 0o600)
                os.replace(partial, path)
        return None

    def pick(self, allocate: Callable[[list[int]], int], taken: list[int]) -> int:
        """A new app's uid: what `allocate` gives once the uids other stores hold count as taken,
        claimed at once."""
        elsewhere = self.others()
        while True:
            uid = allocate([*taken, *elsewhere])
            if self.claim(uid) is None:
                return uid
            elsewhere.add(uid)  # claimed by another server meanwhile

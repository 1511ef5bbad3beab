"""Which store on this machine holds each app uid, so that two wisp servers with stores of
their own (two WISP_HOMEs, or Postgres databases) never run two apps as one uid.

Each server's store hands out app uids from the same range (`isolation.uid_settings`) and keeps
them for good. Without a word between stores, the first app of one server and the first app of
another would share a uid: each could read the other's code and signal its processes. So a root
server claims every uid it runs an app as in a folder of root's (`/var/lib/wisp-app-uids`,
`WISP_UID_CLAIMS`; root's own, not writable by group or others, else it is not used): one file
per uid, naming its store, written under a lock. A new app's uid skips the ones other stores
claimed. A claim by a SQLite store whose WISP_HOME folder is gone is stale and may be taken; a
Postgres store's never is.

`owner_of` and `stale` are pure (tables in tests/unit/test_uid_claims.py); `UidClaims` touches the disk.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .store import StoreURL

CLAIMS_ENV = "WISP_UID_CLAIMS"
DEFAULT_FOLDER = Path("/var/lib/wisp-app-uids")
_SQLITE = "sqlite:"
UNREADABLE = "(an unreadable claim)"


def owner_of(where: StoreURL, environ: Mapping[str, str] | None = None) -> str:
    """How a claim names a store: its SQLite file (resolved), or its Postgres server and database
    (libpq's defaults from PGHOST, PGPORT, PGDATABASE, PGUSER where the URL leaves them out;
    no user name, password or options)."""
    if where.path is not None:
        return _SQLITE + str(where.path.resolve())
    env = os.environ if environ is None else environ
    parts = urlsplit(where.url)
    host = parts.hostname or env.get("PGHOST") or "localhost"
    port = parts.port or int(env.get("PGPORT") or 5432)
    database = unquote(parts.path.lstrip("/")) or env.get("PGDATABASE") or parts.username or env.get("PGUSER") or ""
    return f"postgresql://{host}:{port}/{database}"


def stale(holder: str, exists: Callable[[str], bool] = os.path.isdir) -> bool:
    """A claim nobody can hold any more: the WISP_HOME folder of its SQLite store is gone (not
    merely its state.db, which a restore moves aside). Nothing else is taken on a guess."""
    if not holder.startswith(_SQLITE):
        return False
    return not exists(os.path.dirname(holder[len(_SQLITE):]))


class UidClaims:
    def __init__(self, folder: Path, owner: str) -> None:
        self.folder = folder
        self.owner = owner

    @classmethod
    def open(cls, environ: Mapping[str, str], where: StoreURL) -> tuple[UidClaims | None, str | None]:
        """The claims folder (made 0700 if missing), or None and why: then uids are not
        coordinated with other servers on this machine, which the caller says."""
        folder = Path(environ.get(CLAIMS_ENV) or DEFAULT_FOLDER)
        then = (f"another wisp server on this machine could give one of its apps the uid of one of ours. "
                f"Give root a folder of its own there, or name another with {CLAIMS_ENV}.")
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(folder)
            if info.st_uid != os.geteuid() or info.st_mode & 0o022 or not os.path.isdir(folder) or folder.is_symlink():
                return None, f"the app uids' claims folder {folder} is not root's alone: {then}"
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.close(fd)
        except OSError as exc:
            return None, f"cannot keep the app uids' claims in {folder} ({exc.strerror}): {then}"
        return cls(folder, owner_of(where, environ)), None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a file read or two: other servers wait microseconds
            yield
        finally:
            os.close(fd)

    def _holder(self, uid: int) -> str | None:
        try:
            fd = os.open(self.folder / str(uid), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError:
            return UNREADABLE
        try:
            with os.fdopen(fd, "rb") as claim:
                return claim.read(4096).decode()
        except (OSError, UnicodeDecodeError):
            return UNREADABLE

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
        """Claim `uid` for this store: None when it is ours now, else what holds it."""
        with self._locked():
            holder = self._holder(uid)
            if holder is not None and holder != self.owner and not stale(holder):
                return holder
            if holder != self.owner:
                fd, partial = tempfile.mkstemp(dir=self.folder, prefix=".claim-")  # O_EXCL, 0600
                with os.fdopen(fd, "wb") as out:
                    out.write(self.owner.encode())
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, self.folder / str(uid))
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


def claim_held(claims: UidClaims, app_id: str, uid: int) -> bool:
    """Claim the uid an app of this store runs as; what does not hold is said in the server log,
    with what to do. False when the claims folder could not be used at all."""
    try:
        holder = claims.claim(uid)
    except OSError as exc:
        print(f"wisp server: cannot write the app uids' claims in {claims.folder} ({exc}): app uids are not "
              "checked against other servers' on this machine.", flush=True)
        return False
    if holder is not None:
        print(f"wisp server: the app {app_id} runs as uid {uid}, which {holder} on this machine holds too: their "
              "containers could read each other's code. Stop one of the two servers, or remove that app and deploy "
              "it again on a store of its own.", flush=True)
    return True

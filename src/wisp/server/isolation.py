"""What separates an app's containers from the server and from other apps (issue 11, point 1).

- The environment: a container gets only what its spec, its secrets and wisp give it
  (`base_env`), never the server's own variables (`WISP_HOME`, the CLI's `WISP_TOKEN`, ...).
- A uid per app: when the server runs as root, each app id gets a uid/gid of its own from
  `WISP_APP_UID_BASE` (+ `WISP_APP_UID_COUNT`), kept in the store. Zygotes and containers drop to
  it after the fork and before any user code runs; the app's code folder and socket folder are
  its own (0700), the server's files (token, server.json, state.db, logs) the server's (0600/0700).

The decisions are pure (tables in tests/unit/test_isolation.py); `prepare_*` touch the disk.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_UID_BASE = 2_100_000_000  # far above real users, systemd's dynamic users and subuid ranges
DEFAULT_UID_COUNT = 65536
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"

# What a container gets from wisp itself, beside its image's env() and its secrets. The list the
# README documents: keep both in step.
WISP_VARIABLES = ("WISP_APP", "WISP_FUNCTION", "WISP_WORKDIR", "WISP_CALL_URL", "WISP_CONTROL_URL", "WISP_CALL_TOKEN")


@dataclass(frozen=True)
class AppUser:
    """Who an app's containers run as, and the folder where they bind their sockets."""

    uid: int
    gid: int
    socket_dir: str


def base_env(home: Path, lang: str | None) -> dict[str, str]:
    """The environment every container starts from: a minimal PATH, HOME (the version's folder,
    which is `/root` to the app, as on Modal), LANG, and Python's output settings. Nothing of the
    server's own environment: whatever else a container sees, its spec or its secrets gave it."""
    return {
        "PATH": MINIMAL_PATH,
        "HOME": str(home),
        "LANG": lang or "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def zygote_env(lang: str | None) -> dict[str, str]:
    """An image's zygote runs no user code but is every function zygote's parent: the same minimum."""
    return {"PATH": MINIMAL_PATH, "LANG": lang or "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def uid_settings(environ: Mapping[str, str]) -> tuple[int, int]:
    """(base, count) of the app uid range, from WISP_APP_UID_BASE / WISP_APP_UID_COUNT."""
    values = []
    for name, default in (("WISP_APP_UID_BASE", DEFAULT_UID_BASE), ("WISP_APP_UID_COUNT", DEFAULT_UID_COUNT)):
        raw = environ.get(name) or str(default)
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 1:
            raise ValueError(f"{name}={raw!r} must be a whole number above 0 (default {default}).")
        values.append(value)
    base, count = values
    if base < 1000 or base + count > 2**32 - 2:
        raise ValueError(f"WISP_APP_UID_BASE={base} with WISP_APP_UID_COUNT={count} must stay within 1000 .. 4294967294 "
                         f"and away from real users' uids; the default is {DEFAULT_UID_BASE}.")
    return base, count


def allocate_uid(taken: Iterable[int], base: int, count: int) -> int:
    """The lowest uid of [base, base + count) that no app has yet."""
    used = set(taken)
    for uid in range(base, base + count):
        if uid not in used:
            return uid
    raise RuntimeError(f"All {count} app uids from {base} are taken. Raise WISP_APP_UID_COUNT, or move the range "
                       "with WISP_APP_UID_BASE (apps keep the uid they have).")


def untraversable(path: Path, modes: Mapping[str, int] | None = None) -> Path | None:
    """The first folder on the way to `path` (itself included) that other users cannot enter
    (no `x` for others), or None. `modes` (path -> st_mode) stands in for the disk in tests."""
    path = Path(os.path.abspath(path))
    for folder in [*reversed(path.parents), path]:
        if modes is not None:
            mode = modes.get(str(folder), 0o755 | stat.S_IFDIR)
        else:
            try:
                mode = os.stat(folder).st_mode
            except OSError:
                continue
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return folder
    return None


def isolation_problem(euid: int, home: Path, environ: Mapping[str, str], needed: Iterable[Path] = ()) -> str | None:
    """Why containers will share the server's uid, or None when each app gets its own. `needed`:
    what else containers must read (wisp's own code)."""
    if environ.get("WISP_APP_UIDS", "1") == "0":
        return "WISP_APP_UIDS=0 is set, so containers share the server's uid. Unset it to give each app a uid."
    if euid != 0:
        return ("the server is not running as root, so every container shares the server's uid and could read its "
                "token and state. Run the server as root to give each app a uid of its own, or start it with "
                "`--runtime sandbox` (the sandbox runtime), where containers do not see the server's files.")
    for path in needed:
        blocked = untraversable(path)
        if blocked is not None:
            return (f"containers cannot read {path} (the folder {blocked} is closed to other users), so they share "
                    f"the server's uid. Install wisp where other users may read it, or `chmod o+x {blocked}`, then "
                    "restart the server.")
    blocked = untraversable(home)
    if blocked is not None:
        return (f"containers cannot reach {home} (the folder {blocked} is closed to other users), so they share the "
                f"server's uid. Put WISP_HOME where other users may enter (for example /var/lib/wisp), or "
                f"`chmod o+x {blocked}`, then restart the server.")
    return None


# -- on disk -------------------------------------------------------------------------------------

def secure_home(home: Path, per_app_uids: bool) -> None:
    """WISP_HOME is the server's: 0700, or 0711 with per-app uids (their code and the images
    lie below it, so they may pass through it, but never list it). Its own files are 0600."""
    os.chmod(home, 0o711 if per_app_uids else 0o700)
    for name in ("token", "server.json", "server.log", "server.alive", "server.start", "state.db",
                 "state.db-wal", "state.db-shm"):
        path = home / name
        if path.exists():
            os.chmod(path, 0o600)
    for name, mode in (("logs", 0o700), ("apps", 0o711)):
        folder = home / name
        folder.mkdir(exist_ok=True)
        os.chmod(folder, mode)


def own_tree(root: Path, user: AppUser) -> None:
    """The app's uid owns its version folder (0700: no other app reads its code)."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), user.uid, user.gid)
    os.chown(root, user.uid, user.gid)
    os.chmod(root, 0o700)
    os.chown(root.parent, user.uid, user.gid)  # apps/<id>/: the versions' parent
    os.chmod(root.parent, 0o700)


def app_user(uid: int, socket_parent: str) -> AppUser:
    """The app's user (gid = uid) and its socket folder, where its containers and function zygote
    bind their sockets: the server (root) may enter it, other apps may not."""
    folder = os.path.join(socket_parent, f"u{uid}")  # short: Unix socket paths max out at 107 bytes
    os.makedirs(folder, exist_ok=True)
    os.chown(folder, uid, uid)
    os.chmod(folder, 0o700)
    return AppUser(uid, uid, folder)


__all__ = [
    "DEFAULT_UID_BASE",
    "WISP_VARIABLES",
    "AppUser",
    "allocate_uid",
    "app_user",
    "base_env",
    "isolation_problem",
    "own_tree",
    "secure_home",
    "uid_settings",
    "untraversable",
    "zygote_env",
]

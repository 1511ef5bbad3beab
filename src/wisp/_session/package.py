"""What `serve` and `deploy` send: the app spec (from a fresh import) and the script's files."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._image import MOUNT_BLOBS

MAX_FILES_BYTES = 100 * 1024 * 1024
IMPORT_TIMEOUT = 120.0  # seconds the CLI's own import of a script may take (WISP_IMPORT_TIMEOUT)
_SKIP_DIRS = {"__pycache__", "node_modules", "venv", "env"}


class PackageError(Exception):
    """The script could not be turned into an app; the message is for the user."""


@dataclass(frozen=True)
class Target:
    script: Path
    stub_attr: str | None

    @classmethod
    def parse(cls, text: str) -> Target:
        path, _, attr = text.partition("::")
        script = Path(path).expanduser().resolve()
        if not script.is_file():
            raise PackageError(f"No such file: {path}. Pass the path of a Python script, e.g. `wisp serve app.py`.")
        if script.suffix != ".py":
            raise PackageError(f"{path} is not a .py file. Pass the Python script that defines your stub.")
        return cls(script, attr or None)


def import_timeout(environ: Mapping[str, str]) -> float:
    """Seconds the CLI waits for a script's import: WISP_IMPORT_TIMEOUT, else IMPORT_TIMEOUT."""
    text = environ.get("WISP_IMPORT_TIMEOUT", "").strip()
    if not text:
        return IMPORT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise PackageError(f"WISP_IMPORT_TIMEOUT must be a number of seconds above 0, got {text!r}. "
                           f"Set it to e.g. 300, or unset it for the default ({IMPORT_TIMEOUT:g} s).")
    return seconds


def inspect_app(target: Target) -> dict[str, Any]:
    """Import the script in a fresh interpreter and return its app spec, within import_timeout()."""
    timeout = import_timeout(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wisp._session.inspect", str(target.script), target.stub_attr or ""],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=target.script.parent,
        start_new_session=True,  # what the script starts goes with it when it is stopped
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException as exc:  # timed out, or Ctrl-C: the import must not outlive the command
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        raise PackageError(import_timed_out(target.script.name, timeout, stderr)) from None
    if proc.returncode != 0:
        raise PackageError(stderr.strip() or f"Importing {target.script.name} failed (exit {proc.returncode}).")
    spec: dict[str, Any] = json.loads(stdout)
    return spec


def import_timed_out(script: str, timeout: float, printed: str) -> str:
    last = [line for line in printed.splitlines() if line.strip()][-3:]
    said = "".join(f"\n  {line}" for line in last)
    return (f"{script} did not finish importing within {timeout:g} s, so its app could not be read."
            f"{f' Its last output:{said}' if said else ''}\n"
            "Check what the script does at import (a network call, a lock, a loop, input()) and move slow work "
            "into the functions or an @enter() hook, or set WISP_IMPORT_TIMEOUT to more seconds.")


def _wanted(path: Path) -> bool:
    if path.is_dir() and path.is_symlink():  # a link back up the tree would never end
        return False
    return not path.name.startswith(".") and path.name not in _SKIP_DIRS and not path.name.endswith(".pyc")


def source_dirs(root: Path) -> list[Path]:
    """The script's folder and the Python packages below it: what is shipped and watched."""
    dirs = [root]
    stack = [d for d in root.iterdir() if d.is_dir() and _wanted(d) and (d / "__init__.py").exists()]
    while stack:
        current = stack.pop()
        dirs.append(current)
        stack.extend(d for d in current.iterdir() if d.is_dir() and _wanted(d))
    return dirs


def pack_files(root: Path, blobs: Mapping[str, str] | None = None) -> str:
    """The script's folder as a base64 tar.gz: its files plus the packages beside it, and the
    images' local files (`blobs`: sha256 -> local path) under .wisp-mounts/<sha256>."""
    buffer = io.BytesIO()
    total = 0
    # dereference: a symlinked file is sent as its contents (the server refuses links out of the bundle).
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1, dereference=True) as tar:
        for sha, local in sorted((blobs or {}).items()):
            data = Path(local).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise PackageError(f"{local} changed while it was being sent; run the command again.")
            total += len(data)
            if total > MAX_FILES_BYTES:
                raise PackageError(f"The images' local files add up to more than {MAX_FILES_BYTES >> 20} MiB. "
                                   "Narrow add_local_dir() with ignore=, or keep large data out of the image.")
            info = tarfile.TarInfo(f"{MOUNT_BLOBS}/{sha}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for directory in source_dirs(root):
            for path in sorted(directory.iterdir()):
                if path.is_file() and _wanted(path):
                    total += path.stat().st_size
                    if total > MAX_FILES_BYTES:
                        raise PackageError(
                            f"The files beside {root} add up to more than {MAX_FILES_BYTES >> 20} MiB. "
                            "Move the script into a folder of its own with only the code it needs."
                        )
                    tar.add(path, arcname=str(path.relative_to(root)))
    return base64.b64encode(buffer.getvalue()).decode()

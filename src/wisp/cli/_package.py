"""What `serve` and `deploy` send: the app spec (from a fresh import) and the script's files."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._image import MOUNT_BLOBS

MAX_FILES_BYTES = 100 * 1024 * 1024
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


def inspect_app(target: Target) -> dict[str, Any]:
    """Import the script in a fresh interpreter and return its app spec."""
    proc = subprocess.run(
        [sys.executable, "-m", "wisp.cli._inspect", str(target.script), target.stub_attr or ""],
        capture_output=True, text=True, cwd=target.script.parent,
    )
    if proc.returncode != 0:
        raise PackageError(proc.stderr.strip() or f"Importing {target.script.name} failed (exit {proc.returncode}).")
    return json.loads(proc.stdout)


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
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
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

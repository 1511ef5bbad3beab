"""Local image builder: one virtual environment per image, made with uv, cached by hash.

A build happens in a temporary folder that is renamed into place only when complete, so an
interrupted build never leaves an environment that a later run would use.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import sys
import sysconfig
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import wisp

from .._image import spec_hash

# What the container agent imports; pinned to the server's versions so the agent behaves the
# same in every image and uv can install them from its cache.
RUNTIME_PACKAGES = ("fastapi", "starlette", "pydantic", "uvicorn", "httptools", "uvloop", "python-multipart", "a2wsgi")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class ImageBuildError(Exception):
    """A build failed; the message carries the failing step and the tool's output."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str | None:
    match = _NAME.match(requirement)
    return _normalize(match.group(1)) if match else None


def runtime_requirements(user_packages: list[str]) -> list[str]:
    """Pins for the agent's packages, except those the user names (the user's choice wins)."""
    named = {requirement_name(p) for p in user_packages}
    pins = []
    for package in RUNTIME_PACKAGES:
        if _normalize(package) in named:
            continue
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue  # uvloop is optional (not on Windows)
    return pins


def _wisp_source_root() -> Path:
    return Path(wisp.__file__).resolve().parent.parent


def build_key(spec: dict[str, Any]) -> str:
    """The image's hash plus what else shapes the environment: the agent's pins and interpreter."""
    extra = {
        "image": spec_hash(spec),
        "runtime": runtime_requirements(spec.get("pip", [])),
        "python": spec.get("python_version") or sys.version.split()[0],
        "wisp": str(_wisp_source_root()),
    }
    return hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:20]


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


class LocalImageBuilder:
    def __init__(self, home: Path) -> None:
        self.root = home / "images"
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}

    def python_for(self, spec: dict[str, Any]) -> Path:
        return self.root / build_key(spec) / "bin" / "python"

    async def ensure(self, spec: dict[str, Any]) -> Path:
        """The image's Python, building the environment first unless it is cached."""
        key = build_key(spec)
        target = self.root / key
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if not (target / ".complete").exists():
                await self._build(spec, target)
        return target / "bin" / "python"

    async def _build(self, spec: dict[str, Any], target: Path) -> None:
        tmp = self.root / f".building-{target.name}-{uuid.uuid4().hex[:8]}"
        try:
            await self._venv(spec, tmp)
            packages = list(spec.get("pip", []))
            await _run(
                "pip_install",
                [_uv(), "pip", "install", "--python", str(tmp / "bin" / "python"), *runtime_requirements(packages), *packages],
            )
            site = Path(sysconfig.get_path("purelib", vars={"base": str(tmp), "platbase": str(tmp)}))
            if not site.exists():  # the image's Python may differ from the server's
                site = next(tmp.glob("lib/python3*/site-packages"))
            (site / "_wisp_agent.pth").write_text(str(_wisp_source_root()) + "\n")
            (tmp / ".complete").write_text(json.dumps(spec, sort_keys=True))
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    async def _venv(self, spec: dict[str, Any], tmp: Path) -> None:
        version = spec.get("python_version")
        python = version or sys.executable
        try:
            await _run(
                "create environment",
                [_uv(), "venv", "--relocatable", "--python-preference", "only-system", "--python", python, str(tmp)],
            )
        except ImageBuildError as exc:
            if version:
                raise ImageBuildError(
                    f"No Python {version} interpreter was found on this machine for "
                    f"Image.debian_slim(python_version={version!r}). Install it (for example "
                    f"`uv python install {version}` or your system's python{version} package), "
                    f"or drop python_version to use the server's Python {sys.version.split()[0]}.\n{exc}"
                ) from None
            raise


async def _run(step: str, argv: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise ImageBuildError(f"Image build step `{step}` failed (exit {proc.returncode}):\n{text.rstrip()}")
    return text

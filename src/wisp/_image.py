"""Image values: an immutable description of a function's environment, hashed by content.

Nothing is built here. The server's image builder turns the spec into a virtual environment.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

_PYTHON_VERSION = re.compile(r"3\.\d+(\.\d+)?")


def _flatten(packages: Iterable[Any]) -> list[str]:
    """Accept `pip_install("a", "b")` and `pip_install(["a", "b"])` alike, as Modal does."""
    out: list[str] = []
    for item in packages:
        if isinstance(item, str):
            if item.strip():
                out.append(item.strip())
        elif isinstance(item, Iterable) and not isinstance(item, (bytes, bytearray)):
            out.extend(_flatten(item))
        else:
            raise TypeError(
                f"pip_install() takes package names as strings, got {item!r}. "
                'Write for example `.pip_install("boto3", "requests>=2")`.'
            )
    return out


class Image:
    """An environment for functions: `Image.debian_slim().pip_install("boto3")`.

    Every builder method returns a new Image; the spec is plain data so two images with the same
    packages (in any order) hash the same and share one built environment.
    """

    __slots__ = ("_spec",)

    def __init__(self, spec: dict[str, Any]) -> None:
        self._spec = spec

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        if python_version is not None and not (
            isinstance(python_version, str) and _PYTHON_VERSION.fullmatch(python_version)
        ):
                raise ValueError(
                f"python_version must be a string like '3.11' or '3.11.7', got {python_version!r}."
            )
        return cls({"base": "debian_slim", "python_version": python_version, "pip": []})

    def pip_install(self, *packages: str | Iterable[str]) -> Image:
        merged = sorted(set(self._spec["pip"]) | set(_flatten(packages)))
        return Image({**self._spec, "pip": merged})

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._spec))

    @property
    def hash(self) -> str:
        return spec_hash(self._spec)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Image:
        return cls(json.loads(json.dumps(spec)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        packages = ", ".join(repr(p) for p in self._spec["pip"])
        version = self._spec["python_version"]
        base = f"Image.debian_slim({version!r})" if version else "Image.debian_slim()"
        return f"{base}.pip_install({packages})" if packages else base


def spec_hash(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]

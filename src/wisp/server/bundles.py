"""Deploy bundles (an app version's files as a tar.gz) checked before a byte of them is written.

A bundle comes from a token holder (`wisp deploy`, Modal's client) and is unpacked on the server
and on every node of a cluster, so it is refused whole, with a 4xx saying what to do, when:
- it is larger than `WISP_MAX_BUNDLE_MB` compressed, or unpacks (tar headers included, so a
  million empty files count too) to more than `WISP_MAX_UNPACKED_MB`;
- a member would land outside the version's folder: an absolute name, a `..` component, a
  symlink or hard link pointing out of the bundle;
- a member is not a file, folder or link: devices, FIFOs and the like.
Extraction then uses tarfile's `data` filter as a second line (it checks links against what is
already on disk). `member_refusal` is the pure rule, tested with tables.
"""
from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MAX_BUNDLE_MB = 256  # a bundle as sent, compressed (WISP_MAX_BUNDLE_MB)
MAX_UNPACKED_MB = 1024  # what it unpacks to, headers included (WISP_MAX_UNPACKED_MB)
_MB = 1024 * 1024
_READ = 1 << 20


@dataclass(frozen=True)
class BundleLimits:
    compressed: int = MAX_BUNDLE_MB * _MB  # bytes
    unpacked: int = MAX_UNPACKED_MB * _MB

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BundleLimits:
        """WISP_MAX_BUNDLE_MB and WISP_MAX_UNPACKED_MB (whole MiB, at least 1); ValueError names a bad one."""
        sizes = []
        for name, default in (("WISP_MAX_BUNDLE_MB", MAX_BUNDLE_MB), ("WISP_MAX_UNPACKED_MB", MAX_UNPACKED_MB)):
            text = environ.get(name, "").strip()
            try:
                mb = int(text) if text else default
            except ValueError:
                mb = 0
            if mb < 1:
                raise ValueError(f"{name}={text!r} must be a whole number of MiB, at least 1; unset, it is {default}.")
            sizes.append(mb * _MB)
        return cls(*sizes)


class BundleRefused(Exception):
    """A bundle the server will not unpack: `status` (400 or 413) and a message saying what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_OUTSIDE = "which would put it outside the app's folder"


def member_refusal(name: str, kind: str, link: str = "") -> str | None:
    """Why a member (`kind`: "file", "dir", "symlink", "hardlink", or anything else for another
    type) may not be unpacked, or None. `link` is a link's target as stored."""
    if name.startswith("/"):
        return f"has an absolute name, {_OUTSIDE}"
    if ".." in name.split("/"):
        return f"has a `..` in its name, {_OUTSIDE}"
    if kind in ("file", "dir"):
        return None
    if kind == "symlink":
        if link.startswith("/"):
            return f"is a symlink to the absolute path {link!r}; links in a bundle must stay inside it"
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
        if resolved == ".." or resolved.startswith("../"):
            return f"is a symlink to {link!r}, outside the bundle; links in a bundle must stay inside it"
        return None
    if kind == "hardlink":
        if link.startswith("/") or ".." in link.split("/"):
            return f"is a hard link to {link!r}, outside the bundle; links in a bundle must stay inside it"
        return None
    return f"is a {kind}; a bundle carries only files, folders and links inside it"


def _kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        return "device file"
    return "FIFO" if member.isfifo() else f"special file (tar type {member.type!r})"


class _TooLarge(Exception):
    pass


class _Capped:
    """The bundle's decompressed bytes, read in order, refused past `limit`."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=io.BytesIO(data))
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        chunk = self._gzip.read(size if size >= 0 else _READ)
        self._left -= len(chunk)
        if self._left < 0:
            raise _TooLarge
        return chunk


def _mb(size: int) -> str:
    return f"{size / _MB:.0f} MiB" if size >= _MB else f"{size} bytes"


def check_bundle(data: bytes, limits: BundleLimits | None) -> None:
    """Raise BundleRefused unless `data` is a tar.gz within `limits` (None: sizes not checked)
    whose every member stays inside the folder it is unpacked into. Writes nothing."""
    if limits is not None and len(data) > limits.compressed:
        raise BundleRefused(413, f"The app's files are {_mb(len(data))} compressed, over the server's limit of "
                                 f"{_mb(limits.compressed)} (WISP_MAX_BUNDLE_MB): keep large data out of the "
                                 "script's folder (load it at run time), or raise the limit on the server.")
    try:
        reader = _Capped(data, limits.unpacked if limits is not None else 1 << 62)
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]  # any object with read()
            for member in tar:
                why = member_refusal(member.name, _kind(member), member.linkname)
                if why is not None:
                    raise BundleRefused(400, f"The app's files cannot be unpacked: {member.name!r} {why}. Remove "
                                             "it from the script's folder (wisp deploy sends the files a symlink "
                                             "names, never the link), then deploy again.")
    except _TooLarge:
        assert limits is not None
        raise BundleRefused(413, f"The app's files unpack to more than the server's limit of {_mb(limits.unpacked)} "
                                 "(WISP_MAX_UNPACKED_MB): keep large data out of the script's folder, or raise the "
                                 "limit on the server.") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleRefused(400, f"The app's files are not a readable tar.gz ({exc}); deploy with the wisp CLI "
                                 "of the same version as the server.") from None


def extract_bundle(data: bytes, target: Path, limits: BundleLimits | None, *, checked: bool = False) -> None:
    """Unpack a bundle into the folder `target` (which exists): checked first unless `checked`
    says the caller just did, then extracted with tarfile's `data` filter."""
    if not checked:
        check_bundle(data, limits)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(target, filter="data")


__all__ = ["MAX_BUNDLE_MB", "MAX_UNPACKED_MB", "BundleLimits", "BundleRefused", "check_bundle", "extract_bundle",
           "member_refusal"]

"""Which web function a request is for: by Host name (its own origin) or by path prefix.

Pure and allocation-light: it runs once per request on the gateway's hot path.
"""
from __future__ import annotations

import functools
from collections.abc import Container


def resolve(host: str, path: str, labels: Container[str]) -> tuple[str, str] | None:
    """Return (label, root_path) for a request, or None when no served label matches.

    The Host form wins: a function on its own origin needs no prefix, so root_path is "".
    The path form (`/<label>/...`) exists because Python's resolver does not map `*.localhost`
    to loopback; there the app must know its prefix, so root_path is "/<label>".
    """
    return _resolve(host_label(host), path, labels)


def resolve_raw(host: bytes, path: bytes, labels: Container[str]) -> tuple[str, str] | None:
    """resolve() for a request's Host header and target as read (latin-1 bytes)."""
    return _resolve(_raw_host_label(host), path.decode("latin-1"), labels)


def _resolve(host_label: str, path: str, labels: Container[str]) -> tuple[str, str] | None:
    if host_label and host_label in labels:
        return host_label, ""
    label = path_label(path)
    if label and label in labels:
        return label, "/" + label
    return None


@functools.lru_cache(maxsize=1024)
def _raw_host_label(host: bytes) -> str:
    # Clients send the same few Host values over and over: remembered, parsing one is a lookup.
    # The result depends on the value alone (not on which labels exist), so it never goes stale.
    return host_label(host.decode("latin-1"))


def host_label(host: str) -> str:
    """The first DNS label of a Host header, lowercased, port stripped; "" for IP literals."""
    hostname = host.rpartition(":")[0] if host.count(":") == 1 else host
    if _is_ip_literal(hostname):
        return ""
    return hostname.partition(".")[0].lower()


def path_label(path: str) -> str:
    """The first segment of a request target (`/<label>/rest?q` -> `<label>`)."""
    if not path.startswith("/"):
        return ""
    return path[1:].partition("/")[0].partition("?")[0]


def _is_ip_literal(hostname: str) -> bool:
    # 127.0.0.1 must fall through to the path form even if someone's label is "127";
    # bracketed IPv6 literals never name a label either.
    if hostname.startswith("["):
        return True
    if not hostname[-1:].isdigit():  # the common case, a name
        return False
    return hostname.count(".") == 3 and hostname.replace(".", "").isdigit()

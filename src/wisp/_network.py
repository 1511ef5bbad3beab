"""The `network=` keyword's grammar, pure and stdlib only: the SDK checks a value with it when a
function is decorated, the server reads the stored value with it (issue 15, point 1).

- `network=False` (the default) or None: a sandboxed container has no network but loopback.
- `network=True`: outbound connections to anything but the server's machine itself.
- `network=[...]`: only what the list allows. Each entry is a string, TCP and UDP alike:

  | entry              | allows                                   |
  |--------------------|------------------------------------------|
  | `"pypi.org"`       | that host name, any port                 |
  | `"pypi.org:443"`   | that host name, port 443                 |
  | `"203.0.113.7"`    | that IPv4 address, any port              |
  | `"10.0.0.0/8"`     | that IPv4 network (CIDR), any port       |
  | `"10.0.0.0/8:5432"`| that network, port 5432                  |
  | `":5432"`          | port 5432 of any host                    |
  | `"host:8000-8100"` | a range of ports (any form above)        |

Host names are resolved by the server each time a container starts; a list with host names
also lets the container ask the machine's name servers (port 53 of those in /etc/resolv.conf).
Containers have IPv4 only. The machine itself (its addresses, loopback) is never reachable.
"""
from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

NetworkValue = bool | tuple[str, ...]  # what FunctionSpec.network stores: False, True or canonical entries
EXAMPLE = 'network=["pypi.org:443", "10.0.0.0/8", ":5432"]'
FORMS = ("a host name, an IPv4 address or network (CIDR), each optionally followed by :PORT or :LOW-HIGH, "
         "or :PORT alone for any host")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


@dataclass(frozen=True)
class Allowed:
    """One entry of an allow-list: a host name or an IPv4 network (None: any host), and a port
    range (None: any port)."""

    host: str | None = None
    network: ipaddress.IPv4Network | None = None
    ports: tuple[int, int] | None = None

    def __str__(self) -> str:
        where = self.host or (str(self.network) if self.network is not None else "")
        if self.network is not None and self.network.prefixlen == 32:
            where = str(self.network.network_address)
        if self.ports is None:
            return where
        low, high = self.ports
        return f"{where}:{low}" if low == high else f"{where}:{low}-{high}"


def _ports(entry: str, text: str) -> tuple[int, int]:
    low_text, dash, high_text = text.partition("-")
    if not low_text.isdigit() or (dash and not high_text.isdigit()):
        raise ValueError(f"the port in {entry!r} must be a number from 1 to 65535 or a range LOW-HIGH, as in "
                         f"{entry.rpartition(':')[0] or ''}:443 or :8000-8100")
    low = int(low_text)
    high = int(high_text) if dash else low
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"the ports in {entry!r} must be from 1 to 65535, the low one first (as in :8000-8100)")
    return low, high


def _host_name(entry: str, host: str) -> str:
    name = host.lower().rstrip(".")
    if "*" in name:
        raise ValueError(f"{entry!r}: wildcards are not supported; list each host name (as in \"pypi.org\", "
                         "\"files.pythonhosted.org\") or give a network in CIDR form")
    if name == "localhost" or name.endswith(".localhost"):
        raise ValueError(f"{entry!r}: the server's machine itself is never reachable from a container; "
                         "call other functions with `.remote()`, or drop this entry")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{entry!r} is not a host name, an IPv4 address or a network")
    return name


def _bad_network(entry: str, host: str, exc: ValueError) -> str:
    try:
        meant = ipaddress.IPv4Network(host, strict=False)
    except ValueError:
        return f"{entry!r} is not an IPv4 address or network ({exc})"
    return f"{entry!r} has bits set past its prefix /{meant.prefixlen}: write {meant}"


def _where(entry: str, host: str) -> Allowed:
    if not host:
        return Allowed()
    if re.fullmatch(r"[0-9./]+", host):
        try:
            network = ipaddress.IPv4Network(host, strict=True)
        except ValueError as exc:
            raise ValueError(_bad_network(entry, host, exc)) from None
        if network.subnet_of(LOOPBACK):
            raise ValueError(f"{entry!r}: loopback is the container's own; the server's machine is never "
                             "reachable from a container. Drop this entry")
        return Allowed(network=network)
    return Allowed(host=_host_name(entry, host))


def parse_entry(entry: Any) -> Allowed:
    """One allow-list entry; ValueError saying what is wrong (the caller adds what to write)."""
    if not isinstance(entry, str):
        raise ValueError(f"entries are strings, got {entry!r}")
    text = entry.strip()
    if not text:
        raise ValueError("an entry is empty")
    if "://" in text:
        url = urllib.parse.urlsplit(text)
        port = url.port if url.port else {"https": 443, "http": 80}.get(url.scheme)
        instead = f"{url.hostname}:{port}" if port else url.hostname
        raise ValueError(f"{entry!r} is a URL; write its host and port, as in {instead!r}")
    if "[" in text or text.count(":") > 1:
        raise ValueError(f"{entry!r}: containers have IPv4 only; give an IPv4 address, a network or a host name")
    host, colon, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    allowed = _where(entry, host)
    ports = _ports(entry, port_text) if colon else None
    if allowed.host is None and allowed.network is None and ports is None:
        raise ValueError(f"{entry!r} allows nothing")
    return Allowed(allowed.host, allowed.network, ports)


def canonical(value: Any, where: str = "network") -> NetworkValue:
    """A `network=` value as stored in the spec: False, True, or the entries in canonical form
    (sorted, without repeats). ValueError/TypeError saying what is wrong and what to write."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str):
        raise TypeError(f"{where}: `network` takes True, False or a list of entries, got the string {value!r}. "
                        f"Write network=[{value!r}].")
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(f"{where}: `network` takes True, False or a list of entries, got {value!r}. "
                        f"Write for example {EXAMPLE}.")
    if not value:
        raise ValueError(f"{where}: `network=[]` allows nothing. Write network=False for no network, "
                         f"or list what to reach, as in {EXAMPLE}.")
    entries = set()
    for entry in value:
        try:
            entries.add(str(parse_entry(entry)))
        except ValueError as exc:
            raise ValueError(f"{where}: `network`: {exc}. Each entry is {FORMS}; for example {EXAMPLE}.") from None
    return tuple(sorted(entries))


def allow_list(value: NetworkValue) -> tuple[Allowed, ...]:
    """The stored entries, parsed again (the server's side); () for True or False."""
    if isinstance(value, bool):
        return ()
    return tuple(parse_entry(entry) for entry in value)


def describe(value: NetworkValue) -> str:
    if value is True:
        return "network=True"
    if value is False:
        return "no network"
    return "network=[" + ", ".join(repr(e) for e in value) + "]"


__all__ = ["Allowed", "NetworkValue", "allow_list", "canonical", "describe", "parse_entry"]

"""URL labels: pure naming rules, shared by the CLI (to print URLs) and the server (to route)."""
from __future__ import annotations

import hashlib
import re

MAX_LABEL = 63  # a DNS label's limit, so `<label>.localhost` stays a valid host name
_INVALID = re.compile(r"[^a-z0-9-]+")


def slug(name: str) -> str:
    """Lowercase letters, digits and single dashes; what is left of `name` in a DNS label."""
    cleaned = _INVALID.sub("-", name.lower().replace("_", "-"))
    return re.sub(r"-{2,}", "-", cleaned).strip("-")


def _part(name: str) -> str:
    """A name's slug; a name with nothing DNS-safe in it (`_`, `日本`) gets a stable stand-in."""
    return slug(name) or "x" + hashlib.sha256(name.encode()).hexdigest()[:6]


def make_label(app: str, function: str, *, label: str | None = None, dev: bool = False) -> str:
    """`<app>--<function>` (or the user's `label`), `-dev` under serve, cut to 63 characters.

    A cut label keeps a short hash of the whole one, so two long names never collide.
    """
    base = _part(label) if label else f"{_part(app)}--{_part(function)}"
    suffix = "-dev" if dev else ""
    full = base + suffix
    if len(full) <= MAX_LABEL:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:6]
    keep = MAX_LABEL - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


def app_id_for(name: str, mode: str, owner: str | None = None) -> str:
    """An app's id: its name when deployed, `<name>-dev` under serve (as its labels), and
    `<name>-run-<owner>` under `wisp run` / `stub.run()`, so that two runs never meet."""
    if mode == "run":
        return f"{name}-run-{(owner or '')[:8]}"
    return f"{name}-dev" if mode == "serve" else name


CALL_LABEL_PREFIX = "_c-"


def call_label(app_id: str, function: str) -> str:
    """The gateway route of a called function (`.remote()`, `.map()`): `/_c-<hash>/`.

    Not a DNS label (it starts with `_`), so no Host name reaches it, and a hash, so any app id
    and any function name make a safe path segment that caller and server compute alike.
    """
    digest = hashlib.sha256(f"{app_id}\0{function}".encode()).hexdigest()[:24]
    return CALL_LABEL_PREFIX + digest


def endpoint_urls(label: str, port: int, host: str = "127.0.0.1") -> tuple[str, str]:
    """The two URL forms the gateway routes: by Host name, and by path prefix."""
    return f"http://{label}.localhost:{port}/", f"http://{host}:{port}/{label}/"

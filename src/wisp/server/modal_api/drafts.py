"""What a `modal deploy` sends before it publishes: the objects of an app being created.

Modal's client creates an app's objects one RPC at a time (images layer by layer, mounts file
by file, then functions) and publishes them together with AppPublish. wisp keeps them here, in
memory, keyed by the ids it handed out, and turns them into one wisp deploy at publish time.
Nothing here is durable: a deploy that did not publish is simply made again by the client.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any


def stable_id(prefix: str, key: str) -> str:
    """A Modal-shaped id that is always the same for `key` (a function of an app), so it still
    names its function after a server restart."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    number = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")
    chars = []
    for _ in range(22):
        number, digit = divmod(number, len(alphabet))
        chars.append(alphabet[digit])
    return prefix + "-" + "".join(chars)


def new_id(prefix: str) -> str:
    """Modal-shaped ids: a type prefix and 22 letters and digits (`ap-...`, `im-...`)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "-" + "".join(secrets.choice(alphabet) for _ in range(22))


@dataclass
class ImageLayer:
    commands: list[str]
    base_ids: list[str]  # the layers this one builds on (Modal's `FROM base`)
    context_files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class MountFile:
    filename: str  # the path inside the container (Modal mounts the script's folder at /root)
    sha256: str
    mode: int


@dataclass
class DraftApp:
    """An app between AppCreate (or AppGetLayout for a deployed one) and AppPublish."""

    app_id: str
    description: str
    mode: str = "deploy"  # "serve" for `modal serve` / `modal run` (an ephemeral app)
    functions: dict[str, Any] = field(default_factory=dict)  # function id -> api_pb2.Function
    names: dict[str, str] = field(default_factory=dict)  # function name -> its id
    ranked: dict[str, list[Any]] = field(default_factory=dict)  # function id -> its copies per GPU of a fallback list
    wisp_id: str | None = None  # the wisp app it became at its first AppPublish
    last_heartbeat: float = 0.0  # monotonic time of the client's last AppHeartbeat (ephemeral apps)


@dataclass
class Drafts:
    """Every object a client has created and not yet published or dropped."""

    apps: dict[str, DraftApp] = field(default_factory=dict)
    images: dict[str, ImageLayer] = field(default_factory=dict)
    mounts: dict[str, list[MountFile]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # file contents by SHA-256 (MountPutFile)
    published: dict[str, str] = field(default_factory=dict)  # Modal app id -> the wisp app it became
    log_starts: dict[str, int] = field(default_factory=dict)  # Modal app id -> its wisp log's offset then

    def app(self, app_id: str) -> DraftApp:
        return self.apps.setdefault(app_id, DraftApp(app_id, app_id))

    def wisp_id(self, app_id: str) -> str:
        """The wisp app a Modal app id names: a published draft's, or the id itself (wisp's ids
        are what AppList and AppGetByDeploymentName hand out)."""
        return self.published.get(app_id, app_id)

    def unpublished(self, app_id: str) -> bool:
        """A Modal app created and not yet published: no wisp app, and no log, yet."""
        return app_id in self.apps and app_id not in self.published

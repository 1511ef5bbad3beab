"""Pure translations between wisp's descriptions of apps and Modal's, table-tested.

No `modal_proto` here: values are plain (Modal's enum numbers are stable protocol constants),
so the rules can be read and tested without the extra installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# modal_proto.api_pb2.AppState values (api.proto's `enum AppState`).
APP_STATE_EPHEMERAL = 1
APP_STATE_DEPLOYED = 3
APP_STATE_STOPPED = 5
APP_STATE_DISABLED = 7

LIVE_CONTAINER_STATES = ("starting", "ready", "busy")  # what Modal counts as a running task


@dataclass(frozen=True)
class AppItem:
    """One row of `modal app list`."""

    app_id: str
    name: str
    description: str
    state: int
    n_running_tasks: int
    created_at: float


def app_state(mode: str, state: str) -> int:
    """wisp's (mode, state) as Modal's AppState: a deployed app that runs is DEPLOYED, a served or
    run one EPHEMERAL; a stopped app is STOPPED; one that failed to restore serves nothing and
    would need a new deploy, which is what Modal's DISABLED says."""
    if state == "running":
        return APP_STATE_DEPLOYED if mode == "deploy" else APP_STATE_EPHEMERAL
    if state == "failed":
        return APP_STATE_DISABLED
    return APP_STATE_STOPPED


def running_tasks(described: dict[str, Any]) -> int:
    """Containers starting, ready or busy over every function of a described app."""
    total = 0
    for fn in [*described.get("endpoints", []), *described.get("functions", [])]:
        containers = fn.get("containers", {})
        total += sum(int(containers.get(state, 0)) for state in LIVE_CONTAINER_STATES)
    return total


def app_item(described: dict[str, Any], created_at: float) -> AppItem:
    """A `wisp app list` entry (AppManager.list()) as a row of Modal's AppList."""
    description = described["name"]
    if described.get("error"):
        description += f" (failed: {described['error']})"
    return AppItem(app_id=described["id"], name=described["name"], description=description,
                   state=app_state(described["mode"], described["state"]),
                   n_running_tasks=running_tasks(described), created_at=created_at)


# -- secrets: wisp's named secrets are Modal's deployed Secret objects ---------------------------
SECRET_ID_PREFIX = "st-"  # Modal's Secret ids start so; wisp's carry the name (names are unique)

# modal_proto.api_pb2.ObjectCreationType values.
CREATION_UNSPECIFIED = 0  # look up by name: Secret.from_name
CREATION_CREATE_IF_MISSING = 1
CREATION_CREATE_FAIL_IF_EXISTS = 2  # `modal secret create NAME ...`
CREATION_CREATE_OVERWRITE_IF_EXISTS = 3  # `modal secret create --force`


def secret_id(name: str) -> str:
    return SECRET_ID_PREFIX + name


def secret_name(secret_id: str) -> str | None:
    return secret_id[len(SECRET_ID_PREFIX):] if secret_id.startswith(SECRET_ID_PREFIX) else None


def secret_action(creation_type: int, exists: bool) -> str:
    """What SecretGetOrCreate does: "found" (answer the id), "create", "replace", or the error
    "exists" / "missing" / "unsupported" (ephemeral and app-owned secrets)."""
    if creation_type == CREATION_UNSPECIFIED:
        return "found" if exists else "missing"
    if creation_type == CREATION_CREATE_IF_MISSING:
        return "found" if exists else "create"
    if creation_type == CREATION_CREATE_FAIL_IF_EXISTS:
        return "exists" if exists else "create"
    if creation_type == CREATION_CREATE_OVERWRITE_IF_EXISTS:
        return "replace" if exists else "create"
    return "unsupported"

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

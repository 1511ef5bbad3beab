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


# -- logs: wisp's app log lines as Modal's log entries --------------------------------------------
@dataclass(frozen=True)
class LogLine:
    text: str
    timestamp: float  # seconds since the epoch
    system: bool  # wisp's own line ("[wisp] ..."), not a container's output


def _time_of_day(line: str) -> int | None:
    """Seconds since midnight of a line's `HH:MM:SS ` stamp (wisp's log format), or None."""
    head = line[:9]
    if len(head) < 9 or head[2] != ":" or head[5] != ":" or head[8] != " ":
        return None
    try:
        hours, minutes, seconds = int(head[0:2]), int(head[3:5]), int(head[6:8])
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds


def dated_lines(text: str, last_midnight: float) -> list[LogLine]:
    """The lines of an app log with full timestamps. Lines carry only the time of day, in the
    order written; `last_midnight` is the midnight (epoch seconds, local) of the day the last
    line was written (the file's mtime). Walking back, a time of day later than the one after
    it means the day before. A line without a stamp (a rotation marker) takes the next stamp."""
    lines = text.splitlines()
    out: list[LogLine] = []
    midnight = last_midnight
    later: int | None = None
    for line in reversed(lines):
        of_day = _time_of_day(line)
        if of_day is None:
            of_day = later if later is not None else 0
        elif later is not None and of_day > later:
            midnight -= 86400
        later = of_day
        out.append(LogLine(line, midnight + of_day, line[9:15] == "[wisp]"))
    out.reverse()
    return out


def log_window(lines: list[LogLine], since: float, until: float, limit: int) -> list[LogLine]:
    """The last `limit` lines in [since, until) (0 for either bound: open), oldest first."""
    chosen = [ln for ln in lines if (not since or ln.timestamp >= since) and (not until or ln.timestamp < until)]
    return chosen[-limit:] if limit else chosen


# modal_proto's FileDescriptor values: the `--source` of `modal app logs`.
SOURCE_STDOUT, SOURCE_STDERR, SOURCE_SYSTEM = 1, 2, 3


def log_filter(lines: list[LogLine], search: str = "", function: str | None = None, source: int = 0) -> list[LogLine]:
    """`modal app logs --search/--function/--source`: lines containing `search`, written by a
    container of `function` (its lines are tagged `[<function> c<N>]`), and from `source`: wisp's
    own lines are the system's; a container's stdout and stderr are one stream in wisp, so either
    source gives all of its lines."""
    tag = f"[{function} c" if function is not None else None
    return [ln for ln in lines
            if (not search or search in ln.text)
            and (tag is None or ln.text[9:].startswith(tag))
            and (not source or (source == SOURCE_SYSTEM) == ln.system)]

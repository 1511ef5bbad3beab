"""`wisp image list|prune`."""
from __future__ import annotations

import argparse
import time

from .._session import output as _output
from ..client import ClientError
from . import server


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _ago(when: float | None, now: float) -> str:
    if not when:
        return "never"
    seconds = max(0.0, now - when)
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600), (float("inf"), "days", 86400)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit} ago"
    return "long ago"


def list_images(args: argparse.Namespace) -> int:
    client = server.running("deploy an app: images are kept by the server")
    if client is None:
        return 1
    images = client.request("GET", "/v1/images")["images"]
    if not images:
        _output.say("No images built yet. `wisp serve` or `wisp deploy` builds the ones a script needs.")
        return 0
    now = time.time()
    rows = [("IMAGE", "SIZE", "LAST USE", "PYTHON", "USED BY", "PACKAGES")]
    for image in images:
        state = "" if image["state"] == "ready" else f" ({image['state']})"
        rows.append((image["key"] + state, _size(image["size"]), _ago(image["last_used"], now), image["python"] or "?",
                     ", ".join(image["used_by"]) or "-", " ".join(image["packages"]) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _output.say("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def prune(args: argparse.Namespace) -> int:
    client = server.running("deploy an app: images are kept by the server")
    if client is None:
        return 1
    try:
        result = client.request("POST", "/v1/images/prune", {})
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    removed = result["removed"]
    freed = sum(r["size"] or 0 for r in removed)
    for r in removed:
        _output.say(f"Removed {r['key']}  {_size(r['size'] or 0)}  {' '.join(r['packages']) or '-'}")
    _output.say(f"Removed {len(removed)} image{'s' if len(removed) != 1 else ''} ({_size(freed)}); "
                f"kept {len(result['kept'])} that running apps use.")
    return 0

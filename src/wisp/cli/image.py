"""`wisp image list|prune`, and how `serve`/`deploy` show image builds while they run."""
from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from .._image_steps import ImageSpec
from ..client import ClientError
from . import _output, server

TAIL = 5  # output lines shown after each build step


class BuildProgress:
    """Prints the server's build events: a line per step with its time, the tail of its output,
    and one line for an image that is cached. Lines carry the image's short key, because the
    images of one app build in parallel."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self._tails: dict[str, deque[str]] = {}
        self._lines: dict[str, int] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind, image = event.get("event"), event.get("image", "?")
        who = f" ({event['for']})" if event.get("for") else ""
        where = f"  {image} [{event.get('step')}/{event.get('steps')}]"
        if kind == "cached":
            self._say(f"Image {image}{who}: cached ({event.get('seconds', 0) * 1000:.1f} ms)")
        elif kind == "build":
            self._say(f"Image {image}{who}: building, {event['steps']} steps")
        elif kind == "step":
            self._tails[image], self._lines[image] = deque(maxlen=TAIL), 0
            self._say(f"{where} {event['name']}")
        elif kind == "output":
            self._tails.setdefault(image, deque(maxlen=TAIL)).append(event.get("line", ""))
            self._lines[image] = self._lines.get(image, 0) + 1
        elif kind in ("step_done", "failed"):
            self._tail(image)
            verdict = "done" if kind == "step_done" else "FAILED"
            self._say(f"{where} {verdict} in {event['seconds']:.2f} s")
        elif kind == "built":
            self._say(f"Image {image}{who}: built in {event['seconds']:.2f} s")

    def _tail(self, image: str) -> None:
        lines = [line for line in self._tails.pop(image, ()) if line.strip()]
        hidden = self._lines.pop(image, 0) - len(lines)
        if lines and hidden > 0:
            self._say(f"  {image}     … {hidden} earlier line{'s' if hidden != 1 else ''}")
        for line in lines:
            self._say(f"  {image}     | {line}")

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def mount_blobs(spec: dict[str, Any]) -> dict[str, str]:
    """sha256 -> local path of every local file the app's images add (sent with the deploy)."""
    return {sha: local for fn in spec["functions"] for local, _, sha in ImageSpec.from_data(fn["image"]).local_files()}


def watch_dirs(spec: dict[str, Any]) -> list[Path]:
    """The folders of the images' local files, which `serve` follows as it follows the script."""
    return sorted({Path(local).parent for fn in spec["functions"] for local, _, _ in ImageSpec.from_data(fn["image"]).local_files()})


# -- wisp image list / prune -------------------------------------------------------------------------
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

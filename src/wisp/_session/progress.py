"""What `serve` and `deploy` show while an app's images build, and the image facts the push needs
(the mounted files' contents, the folders to watch)."""
from __future__ import annotations

import sys
from collections import deque
from pathlib import Path
from typing import IO, Any

from .._image_steps import ImageSpec

TAIL = 5  # output lines shown after each build step


class BuildProgress:
    """Prints the server's build events: a line per step with its time, the tail of its output,
    and one line for an image that is cached; and its notices, as they are. Lines carry the image's short key, because the
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
        elif kind == "notice":  # something the server wants the deployer to know (e.g. `network=` not honoured)
            self._say(str(event.get("line", "")))

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

"""Per-app log files: what containers write, and the server's own lines about them."""
from __future__ import annotations

import time
from pathlib import Path


class AppLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", buffering=1, encoding="utf-8")

    def write(self, line: str, *, source: str | None = None) -> None:
        stamp = time.strftime("%H:%M:%S")
        prefix = f"{stamp} [{source}] " if source else f"{stamp} "
        self._file.write(prefix + line + "\n")

    def close(self) -> None:
        self._file.close()

    def read(self, offset: int = 0) -> tuple[str, int]:
        """Text from byte `offset` on, and the offset to continue from."""
        try:
            with self.path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return "", offset
        return data.decode(errors="replace"), offset + len(data)

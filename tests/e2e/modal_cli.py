"""Running Modal's own CLI, unmodified, against a wisp server in tests."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .conftest import REPO, Wisp, free_port, start_wisp

MODAL = str(Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "modal")


def modal_server(home: Path) -> tuple[Wisp, dict[str, str]]:
    """A wisp server with Modal's API on a free port, and the environment `wisp modal env` gives."""
    wisp = start_wisp(home, {"WISP_MODAL_PORT": str(free_port())})
    return wisp, parse_exports(wisp.run("modal", "env").stdout)


def parse_exports(text: str) -> dict[str, str]:
    """What `eval "$(wisp modal env)"` would set, read by a real shell."""
    out = subprocess.run(["sh", "-c", f'{text}\nenv'], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("MODAL_"))


def client_env(exports: dict[str, str], home: Path) -> dict[str, str]:
    """The modal CLI's environment: the exports, and a home of its own so that no ~/.modal.toml
    profile of the machine's user takes part."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    return {**env, **exports, "HOME": str(home), "MODAL_CONFIG_PATH": str(home / ".modal.toml")}


def modal(env: dict[str, str], *args: str, check: bool = True, cwd: Path | None = None,
          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([MODAL, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"modal {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc

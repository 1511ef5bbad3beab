"""Steps shared by `serve` and `deploy`: find the server, package and send an app."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._config import default_port, wisp_home
from ..client import Client, ensure_server
from . import _output
from ._package import Target, inspect_app, pack_files


def server(port: int | None) -> tuple[Client, bool]:
    """The running server, or one started now (True) in the background."""
    client, started = ensure_server(wisp_home(), port or default_port())
    if started:
        _output.say(f"Started the wisp server in the background (pid {client.info.pid}, "
                    f"gateway port {client.info.gateway_port}).")
    return client, started


def push(client: Client, target: Target, mode: str, owner: str | None = None) -> dict[str, Any]:
    """Import the script afresh, send spec + files; raises PackageError or ClientError."""
    spec = inspect_app(target)
    body = {"spec": spec, "mode": mode, "files": pack_files(Path(target.script).parent), "owner": owner}
    app_id = spec["name"] + ("-dev" if mode == "serve" else "")
    return client.request("PUT", f"/v1/apps/{app_id}", body)

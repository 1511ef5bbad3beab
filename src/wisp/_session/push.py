"""Steps shared by `serve`, `deploy`, `run` and `stub.serve()`: find the server, package and send an app."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._config import default_port, wisp_home
from .._urls import app_id_for
from ..client import Client, ClientError, ensure_server
from . import output as _output
from .package import Target, inspect_app, pack_files
from .progress import BuildProgress, mount_blobs, watch_dirs


def server(port: int | None) -> tuple[Client, bool]:
    """The running server, or one started now (True) in the background."""
    client, started = ensure_server(wisp_home(), port or default_port())
    if started:
        _output.say(f"Started the wisp server in the background (pid {client.info.pid}, "
                    f"gateway port {client.info.gateway_port}).")
    return client, started


def server_and_push(port: int | None, target: Target, mode: str,
                    owner: str | None = None) -> tuple[Client, bool, dict[str, Any]]:
    """Find or start the server and send the app. A server that went away meanwhile (another
    `serve` stopped the server it had started, as we found it) is looked for, or started, again."""
    for attempt in (1, 2):
        client, started = server(port)
        try:
            return client, started, push(client, target, mode, owner)
        except ClientError as exc:
            if exc.status != 0 or attempt == 2:
                raise
    raise AssertionError("unreachable")


def push(client: Client, target: Target, mode: str, owner: str | None = None) -> dict[str, Any]:
    """Import the script afresh, send spec + files (the images' local files too), print the image
    builds as they run; raises PackageError or ClientError. The app's "watch" lists the folders of
    the images' local files."""
    spec = inspect_app(target)
    files = pack_files(Path(target.script).parent, mount_blobs(spec))
    body = {"spec": spec, "mode": mode, "files": files, "owner": owner}
    app_id = app_id_for(spec["name"], mode, owner)
    app: dict[str, Any] = client.stream("PUT", f"/v1/apps/{app_id}", body, BuildProgress())
    return {**app, "watch": watch_dirs(spec)}

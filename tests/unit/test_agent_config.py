"""The container agent's uvicorn Config (issue 16, point 4): built and loaded once with a
function's app, in its zygote; each container forked from it only says where it listens."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wisp import Image
from wisp._protocol import Start
from wisp._runtime.__main__ import _server, lifespan, server_config
from wisp._spec import FunctionSpec, WebSpec

IMAGE = Image.debian_slim().spec


@pytest.mark.parametrize(("web", "expected"), [
    (WebSpec("asgi"), "auto"),  # the user's own app: its startup and shutdown run
    (WebSpec("webhook"), "off"),  # wisp's FastAPI app of one route: nothing to run
    (WebSpec("wsgi"), "off"),  # WSGI has no lifespan
    (None, "off"),  # a called function's app (`.remote()`)
])
def test_only_a_users_asgi_app_runs_a_lifespan(web: WebSpec | None, expected: str) -> None:
    assert lifespan(FunctionSpec(name="f", image=IMAGE, web=web)) == expected


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise AssertionError("not called: the config is only built")


@pytest.mark.parametrize(("socket", "where"), [
    ("/run/wisp/c1.sock", {"uds": "/run/wisp/c1.sock", "host": "127.0.0.1", "port": 8000}),
    ("tcp:127.0.0.2:4100", {"uds": None, "host": "127.0.0.2", "port": 4100}),  # a container on a cluster's node
    ("tcp:[::1]:4101", {"uds": None, "host": "::1", "port": 4101}),
])
def test_a_container_says_where_it_listens_on_a_config_loaded_ahead(socket: str, where: dict[str, Any]) -> None:
    spec = FunctionSpec(name="f", image=IMAGE, web=WebSpec("webhook"), timeout=42)
    config = server_config(_app, spec)
    assert config.loaded and config.loaded_app is not None  # the app wrapped once, before any fork
    assert (config.lifespan, config.timeout_graceful_shutdown) == ("off", 42)
    start = Start(directory="/app", module="app", stub="", function="f", socket=socket, timeout_keep_alive=7)
    server = _server(config, start, "ready")
    assert server.config is config
    assert {"uds": config.uds, "host": config.host, "port": config.port} == where
    assert config.timeout_keep_alive == 7


def test_the_loaded_config_serves_the_app_on_the_containers_socket(tmp_path: Any) -> None:
    """Built ahead (as in a zygote), it serves on a socket it learns afterwards."""
    import http.client
    import socket
    import threading
    import time

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"served"})

    config = server_config(app, FunctionSpec(name="f", image=IMAGE, web=WebSpec("webhook")))
    path = str(tmp_path / "c1.sock")
    server = _server(config, Start(directory="/app", module="app", stub="", function="f", socket=path), "ready")
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        for _ in range(1000):  # up to 10 s
            if server.started:
                break
            time.sleep(0.01)

        class Unix(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)

        conn = Unix("localhost", timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"served")
        conn.close()
    finally:
        server.should_exit = True
        thread.join(10)

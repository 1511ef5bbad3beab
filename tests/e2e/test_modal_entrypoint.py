"""Issue 13, point 3: containers of apps deployed by Modal's client run Modal's own, unmodified
container entrypoint (`python -m modal._container_entrypoint`). The server answers its RPCs and
bridges each HTTP request to it as an input: streaming, WebSockets, large bodies both ways and
the redirect chain named by Modal's `__modal_function_call_id` all work through it."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import REPO, Wisp, free_port, start_wisp
from .modal_cli import client_env, modal, parse_exports
from .wsclient import WebSocket

pytestmark = pytest.mark.e2e
APP = REPO / "tests" / "e2e" / "apps" / "modal" / "stream_app.py"
REDIRECT_AFTER = 1.5  # seconds before the gateway answers 303 to a call still running


@pytest.fixture(scope="module")
def wisp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    root = tmp_path_factory.mktemp("modal-entrypoint")
    server = start_wisp(root / "home", {"WISP_MODAL_PORT": str(free_port()), "WISP_REDIRECT_AFTER": str(REDIRECT_AFTER)})
    env = client_env(parse_exports(server.run("modal", "env").stdout), root)
    folder = root / "app"
    folder.mkdir()
    shutil.copy(APP, folder / "stream_app.py")
    try:
        modal(env, "deploy", "stream_app.py", cwd=folder)
        yield server
    finally:
        server.run("server", "stop", check=False)


def url(wisp: Wisp, path: str) -> str:
    return wisp.url("modal-stream--web", path)


def test_the_container_is_modals_own_entrypoint(wisp: Wisp) -> None:
    """Run as `python -m modal._container_entrypoint` runs it (here forked from the image's zygote,
    which imported the client ahead: `__main__` is the entrypoint module, argv[0] its file)."""
    answer = requests.get(url(wisp, "/runtime"), timeout=120)
    assert answer.status_code == 200, answer.text
    runtime = answer.json()
    assert runtime.pop("argv0").endswith("/modal/_container_entrypoint.py")
    assert runtime == {"main": "modal._container_entrypoint", "modal": importlib.metadata.version("modal"),
                       "local": False}


def test_a_streamed_response_arrives_piece_by_piece(wisp: Wisp) -> None:
    with requests.get(url(wisp, "/held"), stream=True, timeout=60) as answer:
        lines = answer.iter_lines()
        assert next(lines) == b"first"  # before /release: nothing buffers the whole response
        assert requests.post(url(wisp, "/release"), timeout=30).json() == {"released": True}
        assert next(lines) == b"second"


def test_large_bodies_cross_both_ways(wisp: Wisp) -> None:
    body = os.urandom(9 * 1024 * 1024 + 17)
    answer = requests.post(url(wisp, "/digest"), data=body, timeout=120)
    assert answer.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    big = requests.get(url(wisp, "/big?mb=8"), timeout=120)
    assert big.status_code == 200 and big.content == bytes(range(256)) * (8 * 4096)


def test_a_websocket_talks_both_ways(wisp: Wisp) -> None:
    with WebSocket(wisp.port, "/modal-stream--web/ws", timeout=60) as ws:
        for word in ("hello", "wisp", "modal"):
            ws.send(word)
            assert ws.recv() == word.upper()


def test_a_long_call_redirects_with_modals_parameter(wisp: Wisp) -> None:
    answer = requests.get(url(wisp, f"/slow?s={REDIRECT_AFTER * 2}"), timeout=120)
    assert answer.status_code == 200 and answer.json() == {"slept": REDIRECT_AFTER * 2}
    assert answer.history and answer.history[0].status_code == 303
    assert "__modal_function_call_id=fc-" in answer.history[0].headers["location"]


def test_concurrent_requests_are_all_answered(wisp: Wisp) -> None:
    answers: list[int] = []

    def one() -> None:
        answers.append(requests.get(url(wisp, "/slow?s=0.5"), timeout=60).status_code)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 10


def test_without_zygotes_the_container_is_a_fresh_python_dash_m(tmp_path: Path) -> None:
    """The local runtime (no zygotes): each container is `python -m modal._container_entrypoint`."""
    server = start_wisp(tmp_path / "home", {"WISP_MODAL_PORT": str(free_port()), "WISP_RUNTIME": "local"})
    try:
        env = client_env(parse_exports(server.run("modal", "env").stdout), tmp_path)
        (tmp_path / "app").mkdir()
        shutil.copy(APP, tmp_path / "app" / "stream_app.py")
        modal(env, "deploy", "stream_app.py", cwd=tmp_path / "app")
        answer = requests.get(server.url("modal-stream--web", "/runtime"), timeout=120)
        assert answer.status_code == 200 and answer.json()["main"] == "modal._container_entrypoint"
        commands = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
            except OSError:
                continue
        assert any(c[1:3] == [b"-m", b"modal._container_entrypoint"] for c in commands)
    finally:
        server.run("server", "stop", check=False)


def test_a_redeploy_under_load_loses_nothing(wisp: Wisp, tmp_path: Path) -> None:
    """Requests in flight on the old version's containers finish there (the kill switch comes
    after its drain); new ones go to the new version: every answer is a 200."""
    env = client_env(parse_exports(wisp.run("modal", "env").stdout), tmp_path)
    (tmp_path / "app").mkdir()
    script = tmp_path / "app" / "stream_app.py"
    script.write_text(APP.read_text().replace('return {"slept": s}', 'return {"slept": s, "v": 2}'))
    statuses: list[int] = []
    done = threading.Event()

    def load() -> None:
        for _ in range(200):  # bounded, whatever happens
            statuses.append(requests.get(url(wisp, "/slow?s=0.3"), timeout=60).status_code)
            if done.is_set():
                return

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        modal(env, "deploy", "stream_app.py", cwd=tmp_path / "app")
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert statuses and set(statuses) == {200}, statuses
    assert requests.get(url(wisp, "/slow?s=0"), timeout=60).json() == {"slept": 0, "v": 2}

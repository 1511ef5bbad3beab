"""Modal's own, unmodified client CLI against a wisp server (issue 13, point 1 and the app
commands of point 2): `eval "$(wisp modal env)"`, then `modal app list/stop`, with the token
checked and unimplemented RPCs named."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from wisp.server.modal_api.drafts import stable_id

from .conftest import REPO, Wisp, get, start_wisp
from .modal_cli import MODAL, client_env, modal, modal_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Wisp, dict[str, str]]]:
    wisp, exports = modal_server(tmp_path_factory.mktemp("modal-home") / "home")
    try:
        yield wisp, exports
    finally:
        wisp.run("server", "stop", check=False)


@pytest.fixture
def env(server: tuple[Wisp, dict[str, str]], tmp_path: Path) -> dict[str, str]:
    return client_env(server[1], tmp_path)


def deploy_hello(wisp: Wisp, tmp_path: Path, name: str) -> None:
    script = tmp_path / f"{name}.py"
    script.write_text((REPO / "examples" / "hello.py").read_text().replace("wisp.Stub()", f"wisp.Stub({name!r})"))
    wisp.run("deploy", str(script))


def test_wisp_modal_env_prints_three_exports(server: tuple[Wisp, dict[str, str]]) -> None:
    wisp, exported = server
    assert set(exported) == {"MODAL_SERVER_URL", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"}
    assert exported["MODAL_SERVER_URL"] == f"http://127.0.0.1:{wisp.env['WISP_MODAL_PORT']}"
    token_file = Path(os.path.realpath(wisp.home)) / "modal-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert exported["MODAL_TOKEN_SECRET"] not in (wisp.home / "server.log").read_text()  # never logged


def test_modal_app_list_shows_wisp_apps(server: tuple[Wisp, dict[str, str]], env: dict[str, str],
                                        tmp_path: Path) -> None:
    deploy_hello(server[0], tmp_path, "listed")
    out = modal(env, "app", "list", "--json").stdout
    assert '"listed"' in out and "deployed" in out, out


def test_modal_app_stop_stops_the_wisp_app(server: tuple[Wisp, dict[str, str]], env: dict[str, str],
                                           tmp_path: Path) -> None:
    wisp = server[0]
    deploy_hello(wisp, tmp_path, "stoppable")
    modal(env, "app", "stop", "stoppable", "--yes")
    listed = wisp.run("app", "list").stdout
    assert any(line.split()[:2] == ["stoppable", "stopped"] for line in listed.splitlines()), listed
    assert "stopped" in modal(env, "app", "list", "--json").stdout


def test_an_unknown_token_is_refused_naming_wisp_modal_env(env: dict[str, str]) -> None:
    proc = modal({**env, "MODAL_TOKEN_SECRET": "ws-not-the-secret"}, "app", "list", check=False)
    assert proc.returncode != 0
    assert "wisp modal env" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_an_rpc_wisp_does_not_implement_is_named(env: dict[str, str]) -> None:
    proc = modal(env, "volume", "list", check=False)
    assert proc.returncode != 0
    assert "does not implement the Modal RPC VolumeList" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_modal_port_0_turns_the_api_off_and_modal_env_says_so(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home", {"WISP_MODAL_PORT": "0"})
    try:
        proc = wisp.run("modal", "env", check=False)
        assert proc.returncode == 1 and proc.stdout == ""
        assert "does not serve Modal's client API" in proc.stderr, proc.stderr
    finally:
        wisp.run("server", "stop", check=False)
        shutil.rmtree(tmp_path / "home", ignore_errors=True)


def test_modal_secrets_are_wisps_secrets(server: tuple[Wisp, dict[str, str]], env: dict[str, str],
                                         tmp_path: Path) -> None:
    wisp = server[0]
    created = modal(env, "secret", "create", "greeting", "GREETING=Bonjour", "OTHER=x")
    assert "Bonjour" not in created.stdout + created.stderr
    again = modal(env, "secret", "create", "greeting", "GREETING=Hallo", check=False)
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr
    modal(env, "secret", "create", "greeting", "GREETING=Hola", "--force")

    listed = modal(env, "secret", "list", "--json").stdout
    assert "greeting" in listed and "Hola" not in listed, listed
    assert "greeting" in wisp.run("secret", "list").stdout

    script = tmp_path / "secret_env.py"
    shutil.copy(REPO / "examples" / "secret_env.py", script)
    wisp.run("deploy", str(script))
    assert get(wisp.url("secret-env--greet", "/?name=Ada")).json() == "Hola, Ada!"

    modal(env, "secret", "delete", "greeting", "--yes")
    assert "greeting" not in wisp.run("secret", "list").stdout


def test_modal_app_logs_shows_and_follows_the_apps_log(server: tuple[Wisp, dict[str, str]], env: dict[str, str],
                                                       tmp_path: Path) -> None:
    wisp = server[0]
    deploy_hello(wisp, tmp_path, "logged")
    assert get(wisp.url("logged--f")).status_code == 200
    fetched = modal(env, "app", "logs", "logged").stdout
    assert "[wisp] deploy logged version 1" in fetched and "ready in" in fetched, fetched
    found = modal(env, "app", "logs", "logged", "--search", "ready in", "--source", "system").stdout
    assert "ready in" in found and "deploy logged version 1" not in found, found
    other = stable_id("fu", "logged/no-such")
    refused = modal(env, "app", "logs", "logged", "--function", other, check=False)
    assert refused.returncode != 0 and "No function" in refused.stdout + refused.stderr

    follower = subprocess.Popen([MODAL, "app", "logs", "logged", "-f"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        wisp.run("app", "stop", "logged")
        out, _ = follower.communicate(timeout=60)  # the stopped app's log ends: the follower exits
    finally:
        follower.kill()
    assert follower.returncode == 0, out
    assert "[wisp] app logged stopped" in out, out

"""Deploy tokens (issue 11, point 1): `wisp token create --deploy APP_NAME` makes a token that may
deploy, serve, stop and read the logs of that app only; the CLI uses it from WISP_TOKEN. Anything
else is refused with 403 saying what the token may do; unknown or revoked tokens get 401."""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Wisp, get, start_wisp

pytestmark = pytest.mark.e2e
APPS = Path(__file__).parent / "apps"
MAY = "it may only deploy, serve, heartbeat, stop and read the logs of 'tok-a'"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Wisp, Path, str]]:
    root = tmp_path_factory.mktemp("tokens")
    wisp = start_wisp(root / "home")
    for name in ("deploy_token_a.py", "deploy_token_b.py"):
        shutil.copy(APPS / name, root / name)
    wisp.run("deploy", str(root / "deploy_token_b.py"))  # with the admin token
    made = wisp.run("token", "create", "--deploy", "tok-a")
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("wd-") and "deploy-tok-a" in made.stdout
    yield wisp, root, token
    wisp.run("server", "stop", check=False)


def as_token(wisp: Wisp, token: str) -> Wisp:
    """The same server, with the CLI holding `token` in WISP_TOKEN (as CI would)."""
    other = Wisp(wisp.home, wisp.port)
    other.env = {**wisp.env, "WISP_TOKEN": token}
    return other


def control(wisp: Wisp, method: str, path: str, token: str, body: object = None) -> tuple[int, object]:
    """A control API request with `token`: (status, the JSON answer, or the text of a log)."""
    info = json.loads((wisp.home / "server.json").read_text())
    req = urllib.request.Request(f"http://127.0.0.1:{info['admin_port']}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_deploy_token_deploys_lists_and_reads_the_logs_of_its_app(server: tuple[Wisp, Path, str]) -> None:
    wisp, root, token = server
    ci = as_token(wisp, token)
    ci.run("deploy", str(root / "deploy_token_a.py"))
    assert get(wisp.url("tok-a--hello")).json() == {"app": "tok-a"}
    listed = ci.run("app", "list").stdout
    assert "tok-a" in listed and "tok-b" not in listed  # its own app only
    assert "tok-a" in ci.run("app", "logs", "tok-a").stdout


def test_a_deploy_token_can_serve_its_app(server: tuple[Wisp, Path, str]) -> None:
    wisp, root, token = server
    with as_token(wisp, token).serve(root / "deploy_token_a.py") as serving:
        serving.wait_for("tok-a--hello-dev")
        assert get(wisp.url("tok-a--hello-dev")).json() == {"app": "tok-a"}


@pytest.mark.parametrize("args", [
    ("deploy", "deploy_token_b.py"),
    ("app", "stop", "tok-b"),
    ("app", "logs", "tok-b"),
    ("secret", "create", "stolen", "K=V"),
    ("secret", "list"),
    ("token", "create", "--deploy", "tok-b"),
    ("token", "create", "--proxy", "mine"),
    ("token", "list"),
    ("token", "revoke", "deploy-tok-a"),
    ("image", "list"),
    ("server", "stop"),
])
def test_a_deploy_token_may_do_nothing_else(server: tuple[Wisp, Path, str], args: tuple[str, ...]) -> None:
    wisp, root, token = server
    argv = [str(root / a) if a.endswith(".py") else a for a in args]
    proc = as_token(wisp, token).run(*argv, check=False)
    assert proc.returncode != 0
    assert MAY in proc.stderr and "$WISP_HOME/token" in proc.stderr, proc.stderr
    assert get(wisp.url("tok-b--hello")).json() == {"app": "tok-b"}  # the other app serves on, the server too


def test_refusals_over_http_are_403_for_a_known_token_and_401_for_an_unknown_one(server: tuple[Wisp, Path, str]) -> None:
    wisp, _, token = server
    status, body = control(wisp, "DELETE", "/v1/apps/tok-b", token)
    assert status == 403 and "wisp token create --deploy tok-b" in str(body)
    status, body = control(wisp, "PUT", "/v1/secrets/stolen", token, {"values": {"K": "V"}})
    assert status == 403
    assert control(wisp, "DELETE", "/v1/apps/tok-b", "wd-not-a-token")[0] == 401
    proc = as_token(wisp, "wd-not-a-token").run("app", "list", check=False)
    assert proc.returncode != 0 and "Missing or wrong token" in proc.stderr


def test_a_revoked_deploy_token_is_refused_at_once(server: tuple[Wisp, Path, str]) -> None:
    wisp, _, _ = server
    token = wisp.run("token", "create", "--deploy", "tok-a").stdout.strip().splitlines()[-1]
    listed = wisp.run("token", "list").stdout
    assert "deploy-tok-a-2  deploy token of app tok-a" in listed and token not in listed
    assert control(wisp, "GET", "/v1/apps/tok-a/logs", token)[0] == 200
    wisp.run("token", "revoke", "deploy-tok-a-2")
    assert control(wisp, "GET", "/v1/apps/tok-a/logs", token)[0] == 401
    assert "deploy-tok-a-2" not in wisp.run("token", "list").stdout

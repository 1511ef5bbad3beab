"""Proxy auth (issue 10, point 6): `requires_proxy_auth=True` endpoints take only requests with a
proxy token's Modal-Key/Modal-Secret, checked by the gateway before anything starts or queues."""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Wisp, admin, get, server_with

pytestmark = pytest.mark.e2e
APP = Path(__file__).parent / "apps" / "proxy_auth_app.py"


@pytest.fixture(scope="module")
def wisp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    with server_with(tmp_path_factory.mktemp("proxy"), APP) as w:
        yield w


def make_token(wisp: Wisp, name: str) -> dict[str, str]:
    out = wisp.run("token", "create", "--proxy", name).stdout
    key = re.search(r"^Modal-Key: (wk-\S+)$", out, re.M)
    secret = re.search(r"^Modal-Secret: (ws-\S+)$", out, re.M)
    assert key and secret, out
    return {"Modal-Key": key[1], "Modal-Secret": secret[1]}


def containers(wisp: Wisp, function: str) -> int:
    apps = json.loads(admin(wisp, "/v1/apps")[1])["apps"]
    endpoint = next(ep for app in apps for ep in app["endpoints"] if ep["function"] == function)
    return sum(endpoint["containers"].values())


def test_requests_without_valid_credentials_get_401_and_start_nothing(wisp: Wisp) -> None:
    good = make_token(wisp, "ci")
    for headers in ({}, {"Modal-Key": good["Modal-Key"]}, {**good, "Modal-Secret": "ws-guess"},
                    {"Modal-Key": "wk-nope", "Modal-Secret": good["Modal-Secret"]}):
        for label in ("proxied--private", "proxied--headers"):
            resp = get(wisp.url(label), headers=headers)
            assert resp.status_code == 401, (label, headers, resp.text)
            error = resp.json()["error"]
            assert "Modal-Key" in error and "Modal-Secret" in error and "wisp token create --proxy" in error
    assert containers(wisp, "private") == containers(wisp, "headers") == 0  # refused before any cold start


def test_a_proxy_token_opens_them_and_its_headers_never_reach_the_app(wisp: Wisp) -> None:
    token = make_token(wisp, "app-client")
    resp = get(wisp.url("proxied--private"), headers=token)
    assert (resp.status_code, resp.json()) == (200, "private")
    seen = get(wisp.url("proxied--headers"), headers={**token, "X-Other": "kept"}).json()["headers"]
    assert "x-other" in seen
    assert "modal-key" not in seen and "modal-secret" not in seen
    # By Host header as well as by path.
    resp = get(f"http://127.0.0.1:{wisp.port}/", headers={**token, "Host": f"proxied--private.localhost:{wisp.port}"})
    assert (resp.status_code, resp.json()) == (200, "private")


def test_endpoints_without_the_flag_stay_public(wisp: Wisp) -> None:
    resp = get(wisp.url("proxied--public"))
    assert (resp.status_code, resp.json()) == (200, "public")


def test_tokens_are_listed_without_secrets_and_stored_hashed(wisp: Wisp) -> None:
    token = make_token(wisp, "listed")
    listed = wisp.run("token", "list").stdout
    assert "listed" in listed and token["Modal-Key"] in listed and token["Modal-Secret"] not in listed
    status, body = admin(wisp, "/v1/tokens")
    assert status == 200 and token["Modal-Secret"] not in body
    for path in wisp.home.rglob("*"):  # the database (and its WAL) included: only the hash is kept
        if path.is_file():
            assert token["Modal-Secret"].encode() not in path.read_bytes(), path
    again = wisp.run("token", "create", "--proxy", "listed", check=False)
    assert again.returncode != 0 and "wisp token revoke listed" in again.stderr


def test_a_revoked_token_stops_working_within_a_second(wisp: Wisp) -> None:
    token = make_token(wisp, "short-lived")
    other = make_token(wisp, "long-lived")
    assert get(wisp.url("proxied--private"), headers=token).status_code == 200
    wisp.run("token", "revoke", "short-lived")
    revoked = time.monotonic()
    while get(wisp.url("proxied--private"), headers=token).status_code != 401:
        assert time.monotonic() - revoked < 1.0, "the revoked token still worked after 1 s"
    assert get(wisp.url("proxied--private"), headers=other).status_code == 200
    assert "short-lived" not in wisp.run("token", "list").stdout
    by_key = wisp.run("token", "revoke", other["Modal-Key"])  # by key too
    assert "long-lived" in by_key.stdout
    assert get(wisp.url("proxied--private"), headers=other).status_code == 401
    missing = wisp.run("token", "revoke", "short-lived", check=False)
    assert missing.returncode != 0 and "wisp token list" in missing.stderr


def test_tokens_outlive_a_server_restart(wisp: Wisp) -> None:
    token = make_token(wisp, "durable")
    wisp.run("server", "stop")
    wisp.run("server", "start")
    assert get(wisp.url("proxied--private"), headers=token).status_code == 200
    assert get(wisp.url("proxied--private")).status_code == 401

"""The gateway's admission checks (wisp.server.auth): proxy tokens and call tokens, as tables."""
from __future__ import annotations

import pytest

from wisp.server.auth import ProxyTokens, call_token_check, digest, new_proxy_token

KEY, SECRET = "wk-0123456789abcdef0123", "ws-the-secret"
OTHER_KEY, OTHER_SECRET = "wk-ffff", "ws-other"


@pytest.fixture
def tokens() -> ProxyTokens:
    return ProxyTokens([(KEY, digest(SECRET)), (OTHER_KEY, digest(OTHER_SECRET))])


@pytest.mark.parametrize(("headers", "admitted", "says"), [
    ([(b"Modal-Key", KEY.encode()), (b"Modal-Secret", SECRET.encode())], True, ""),
    ([(b"modal-key", KEY.encode()), (b"MODAL-SECRET", SECRET.encode())], True, ""),  # names are case-blind
    ([(b"Modal-Key", b" " + KEY.encode()), (b"Modal-Secret", SECRET.encode() + b" ")], True, ""),
    ([(b"Modal-Key", OTHER_KEY.encode()), (b"Modal-Secret", OTHER_SECRET.encode())], True, ""),
    ([], False, "send the Modal-Key and Modal-Secret headers"),
    ([(b"Modal-Key", KEY.encode())], False, "send the Modal-Key and Modal-Secret"),
    ([(b"Modal-Secret", SECRET.encode())], False, "send the Modal-Key and Modal-Secret"),
    ([(b"Modal-Key", KEY.encode()), (b"Modal-Secret", b"ws-wrong")], False, "not a valid proxy token"),
    ([(b"Modal-Key", KEY.encode()), (b"Modal-Secret", OTHER_SECRET.encode())], False, "not a valid"),  # crossed
    ([(b"Modal-Key", b"wk-unknown"), (b"Modal-Secret", SECRET.encode())], False, "not a valid"),
    ([(b"Authorization", f"Bearer {SECRET}".encode())], False, "send the Modal-Key"),
])
def test_proxy_token_admission(tokens: ProxyTokens, headers: list[tuple[bytes, bytes]], admitted: bool,
                               says: str) -> None:
    refused = tokens.refusal(headers)
    assert (refused is None) == admitted
    if refused is not None:
        assert refused.status == 401
        assert says in refused.message
        assert "wisp token create --proxy NAME" in refused.message
        assert SECRET not in refused.message


def test_a_removed_token_is_refused_at_once_and_others_still_pass(tokens: ProxyTokens) -> None:
    good = [(b"Modal-Key", KEY.encode()), (b"Modal-Secret", SECRET.encode())]
    assert tokens.refusal(good) is None
    tokens.remove(KEY)
    assert tokens.refusal(good) is not None
    assert tokens.refusal([(b"Modal-Key", OTHER_KEY.encode()), (b"Modal-Secret", OTHER_SECRET.encode())]) is None
    tokens.remove("wk-never-there")  # no error


def test_new_tokens_are_distinct_and_only_their_hash_is_kept() -> None:
    made = {new_proxy_token() for _ in range(50)}
    assert len({key for key, _ in made}) == len({secret for _, secret in made}) == 50
    key, secret = next(iter(made))
    assert key.startswith("wk-") and secret.startswith("ws-") and len(secret) > 40
    assert digest(secret) != secret and len(digest(secret)) == 64 and digest(secret) == digest(secret)


@pytest.mark.parametrize(("headers", "admitted"), [
    ([(b"x-wisp-call-token", b"tok")], True),
    ([(b"X-Wisp-Call-Token", b"tok")], True),
    ([(b"x-wisp-call-token", b"other")], False),
    ([(b"x-wisp-call-token", b"to")], False),
    ([], False),
    ([(b"Modal-Key", b"tok"), (b"Modal-Secret", b"tok")], False),
])
def test_call_token_admission(headers: list[tuple[bytes, bytes]], admitted: bool) -> None:
    refused = call_token_check("tok")(headers)
    assert (refused is None) == admitted
    if refused is not None:
        assert refused.status == 401 and "call token" in refused.message


# -- the control API: who may do what (issue 11) ---------------------------------------------------
from wisp.server.auth import (  # noqa: E402
    ADMIN,
    DeployTokens,
    Principal,
    action_of,
    app_refusal,
    new_deploy_token,
    route_refusal,
)

DEPLOY = Principal("deploy", "shop", "deploy-shop")
CALL = Principal("call", "shop")


@pytest.mark.parametrize(("method", "path", "action"), [
    ("GET", "/v1/health", "health"),
    ("PUT", "/v1/apps/shop", "deploy"),
    ("DELETE", "/v1/apps/shop", "stop"),
    ("GET", "/v1/apps/shop/logs", "logs"),
    ("POST", "/v1/apps/shop/heartbeat", "heartbeat"),
    ("GET", "/v1/apps", "list"),
    ("POST", "/v1/apps", "admin"),
    ("GET", "/v1/apps/shop", "admin"),
    ("GET", "/v1/apps/shop/heartbeat", "admin"),
    ("POST", "/v1/calls", "calls"),
    ("GET", "/v1/calls/fc-1", "calls"),
    ("PUT", "/v1/secrets/db", "admin"),
    ("GET", "/v1/secrets", "admin"),
    ("POST", "/v1/tokens", "admin"),
    ("DELETE", "/v1/tokens/x", "admin"),
    ("POST", "/v1/shutdown", "admin"),
    ("POST", "/v1/images/prune", "admin"),
    ("GET", "/metrics", "admin"),
    ("GET", "/v1/unknown", "admin"),  # what is not named is the admin's
])
def test_action_of(method: str, path: str, action: str) -> None:
    assert action_of(method, path) == action


@pytest.mark.parametrize(("who", "action", "allowed"), [
    (ADMIN, "admin", True), (ADMIN, "deploy", True), (ADMIN, "calls", True),
    (DEPLOY, "health", True), (DEPLOY, "deploy", True), (DEPLOY, "stop", True), (DEPLOY, "logs", True),
    (DEPLOY, "heartbeat", True), (DEPLOY, "list", True),
    (DEPLOY, "admin", False), (DEPLOY, "calls", False),
    (CALL, "calls", True), (CALL, "health", True),
    (CALL, "deploy", False), (CALL, "stop", False), (CALL, "list", False), (CALL, "admin", False),
])
def test_route_refusal(who: Principal, action: str, allowed: bool) -> None:
    refusal = route_refusal(who, action)
    assert (refusal is None) == allowed
    if refusal is not None:  # says what the token may do and what to use instead
        assert "$WISP_HOME/token" in refusal
        assert ("deploy, serve, heartbeat, stop and read the logs of 'shop'" in refusal) == (who is DEPLOY)
        assert ("may only spawn and fetch that app's calls" in refusal) == (who is CALL)


@pytest.mark.parametrize(("who", "app", "allowed"), [
    (ADMIN, "other", True), (ADMIN, None, True),
    (DEPLOY, "shop", True),
    (DEPLOY, "other", False), (DEPLOY, "shop-dev", False), (DEPLOY, None, False),  # an app's name, not its id
])
def test_app_refusal(who: Principal, app: str | None, allowed: bool) -> None:
    refusal = app_refusal(who, app)
    assert (refusal is None) == allowed
    if refusal is not None and app is not None:
        assert f"wisp token create --deploy {app}" in refusal and "deploy token 'deploy-shop' of app 'shop'" in refusal


def test_deploy_tokens_are_found_by_their_digest_and_revoked_at_once() -> None:
    token, other = new_deploy_token(), new_deploy_token()
    assert token.startswith("wd-") and token != other
    tokens = DeployTokens([("deploy-shop", "shop", digest(token))])
    assert tokens.find(token) == Principal("deploy", "shop", "deploy-shop")
    assert tokens.find(other) is None and tokens.find("") is None
    assert tokens.find(digest(token)) is None  # what the store keeps is no token
    tokens.remove(digest(token))
    assert tokens.find(token) is None

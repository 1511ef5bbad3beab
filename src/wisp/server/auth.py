"""Who may reach a route: the gateway's `admit(headers)` checks, run before anything starts or queues.

- A called function's route takes its app's call token (`x-wisp-call-token`) only.
- A web function with `requires_proxy_auth=True` takes a proxy token, as on Modal: the
  `Modal-Key` header holds the token's id (`wk-...`), `Modal-Secret` its secret (`ws-...`).
  The server keeps the SHA-256 of each secret, never the secret; `ProxyTokens` holds them in
  memory, so a token made or revoked through the control API counts from the next request.

And who may use the control API (issue 11): the server's *admin* token (`$WISP_HOME/token`) may do
everything; a *deploy* token (`wisp token create --deploy APP`, kept as a SHA-256 like proxy
tokens) may deploy, serve, heartbeat, stop and read the logs of one app name; an app's *call*
token (its containers' `WISP_CALL_TOKEN`) may spawn and fetch that app's calls. `route_refusal`
and `app_refusal` are the checks (a refusal's message), `action_of` names what a request does.

Pure apart from the new tokens' randomness: tested with tables in tests/unit/test_auth.py.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from .._call_wire import TOKEN_HEADER
from .gateway import Admit, TargetUnavailable
from .gateway._target import Headers

KEY_HEADER = "Modal-Key"
SECRET_HEADER = "Modal-Secret"
KEY_PREFIX = "wk-"
SECRET_PREFIX = "ws-"
DEPLOY_PREFIX = "wd-"
ADMIN_TOKEN_HINT = "the server's admin token (the file $WISP_HOME/token on the server's machine)"


def digest(secret: str) -> str:
    """What the server stores of a proxy token's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_proxy_token() -> tuple[str, str]:
    """A fresh (key, secret): the key names the token in lists, the secret is shown once."""
    return KEY_PREFIX + secrets.token_hex(10), SECRET_PREFIX + secrets.token_urlsafe(32)


def call_token_check(token: str) -> Admit:
    expected = token.encode()
    header = TOKEN_HEADER.encode()
    refusal = TargetUnavailable(401, f"Calls to this function need its app's call token (the {TOKEN_HEADER} "
                                     "header): call it with `f.remote()` from the app's own code, `wisp run` or "
                                     "`with stub.run():`.")

    def admit(headers: Headers) -> TargetUnavailable | None:
        for name, value in headers:
            if name.lower() == header and hmac.compare_digest(value, expected):
                return None
        return refusal

    return admit


class ProxyTokens:
    """Proxy tokens by key -> the digest of their secret; what the gateway checks against."""

    def __init__(self, tokens: Iterable[tuple[str, str]] = ()) -> None:
        self._digests: dict[bytes, bytes] = {}
        for key, secret_digest in tokens:
            self.add(key, secret_digest)

    def add(self, key: str, secret_digest: str) -> None:
        self._digests[key.encode()] = secret_digest.encode()

    def remove(self, key: str) -> None:
        self._digests.pop(key.encode(), None)

    def refusal(self, headers: Headers) -> TargetUnavailable | None:
        key = secret = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"modal-key":
                key = value
            elif lowered == b"modal-secret":
                secret = value
        if key is None or secret is None:
            return _proxy_refusal(f"This endpoint requires proxy auth: send the {KEY_HEADER} and {SECRET_HEADER} "
                                  "headers of a proxy token, which `wisp token create --proxy NAME` makes.")
        expected = self._digests.get(key.strip())
        given = hashlib.sha256(secret.strip()).hexdigest().encode()
        if expected is None or not hmac.compare_digest(given, expected):
            return _proxy_refusal(f"The {KEY_HEADER}/{SECRET_HEADER} pair is not a valid proxy token (wrong, or "
                                  "revoked). `wisp token list` shows the tokens; `wisp token create --proxy NAME` "
                                  "makes a new one.")
        return None


def _proxy_refusal(message: str) -> TargetUnavailable:
    return TargetUnavailable(401, message, {"WWW-Authenticate": f'{KEY_HEADER} realm="wisp"'})


# -- the control API ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    """Who a control request comes from: the admin, a deploy token (`app` = its app name, `name`
    its token's name) or an app's call token (`app` = the app id)."""

    kind: str  # "admin", "deploy" or "call"
    app: str | None = None
    name: str | None = None


ADMIN = Principal("admin")
APP_ACTIONS = ("deploy", "stop", "logs", "heartbeat")  # what a deploy token may do, to its app only
WHAT = {"deploy": "deploying or serving an app", "stop": "stopping an app", "logs": "reading an app's logs",
        "heartbeat": "holding a served app", "list": "listing apps", "calls": "spawning or fetching calls",
        "health": "asking for the server's health"}


def new_deploy_token() -> str:
    return DEPLOY_PREFIX + secrets.token_urlsafe(32)


def action_of(method: str, path: str) -> str:
    """What a control request does: one of APP_ACTIONS, "health", "list", "calls", or "admin"
    (secrets, tokens, images, metrics, server stop: the admin token's alone)."""
    parts = path.strip("/").split("/")
    if parts == ["v1", "health"]:
        return "health"
    if parts[:2] == ["v1", "calls"]:
        return "calls"
    if parts[:2] == ["v1", "apps"]:
        if len(parts) == 2:
            return "list" if method == "GET" else "admin"
        if len(parts) == 3:
            return {"PUT": "deploy", "DELETE": "stop"}.get(method, "admin")
        if len(parts) == 4 and (parts[3], method) in (("logs", "GET"), ("heartbeat", "POST")):
            return parts[3]
    return "admin"


def route_refusal(who: Principal, action: str) -> str | None:
    """Why `who` may not do `action` at all, or None. Deploy tokens' app actions are checked
    again against the app they touch (`app_refusal`)."""
    if who.kind == "admin" or action == "health":
        return None
    if who.kind == "call":
        if action == "calls":
            return None
        return (f"This is app {who.app!r}'s call token: it may only spawn and fetch that app's calls. "
                f"{WHAT.get(action, 'This').capitalize()} needs {ADMIN_TOKEN_HINT}, or a deploy token of the app "
                "(`wisp token create --deploy APP_NAME`).")
    if action in APP_ACTIONS or action == "list":
        return None
    return _deploy_refusal(who, WHAT.get(action, "this request (secrets, tokens, images, metrics, server stop)"))


def app_refusal(who: Principal, app_name: str | None) -> str | None:
    """Why `who` may not touch the app named `app_name` (None: an app it cannot know), or None."""
    if who.kind != "deploy" or (app_name is not None and app_name == who.app):
        return None
    other = f"app {app_name!r}" if app_name else "that app"
    hint = f" or a deploy token of its own: `wisp token create --deploy {app_name}`" if app_name else ""
    return _deploy_refusal(who, other, hint)


def _deploy_refusal(who: Principal, what: str, hint: str = "") -> str:
    return (f"This is deploy token {who.name!r} of app {who.app!r}: it may only deploy, serve, heartbeat, stop and "
            f"read the logs of {who.app!r}. For {what}, use {ADMIN_TOKEN_HINT}{hint}.")


class DeployTokens:
    """Deploy tokens by the SHA-256 of their value -> (token name, app name); checked from memory."""

    def __init__(self, tokens: Iterable[tuple[str, str, str]] = ()) -> None:
        self._by_digest: dict[str, tuple[str, str]] = {}
        for name, app_name, token_digest in tokens:
            self.add(name, app_name, token_digest)

    def add(self, name: str, app_name: str, token_digest: str) -> None:
        self._by_digest[token_digest] = (name, app_name)

    def remove(self, token_digest: str) -> None:
        self._by_digest.pop(token_digest, None)

    def find(self, token: str) -> Principal | None:
        if not token.startswith(DEPLOY_PREFIX):
            return None
        found = self._by_digest.get(digest(token))  # a lookup by digest: the token's bytes are never compared
        return None if found is None else Principal("deploy", found[1], found[0])


__all__ = [
    "ADMIN",
    "APP_ACTIONS",
    "KEY_HEADER",
    "SECRET_HEADER",
    "DeployTokens",
    "Principal",
    "ProxyTokens",
    "action_of",
    "app_refusal",
    "call_token_check",
    "digest",
    "new_deploy_token",
    "new_proxy_token",
    "route_refusal",
]

"""Who may reach a route: the gateway's `admit(headers)` checks, run before anything starts or queues.

- A called function's route takes its app's call token (`x-wisp-call-token`) only.
- A web function with `requires_proxy_auth=True` takes a proxy token, as on Modal: the
  `Modal-Key` header holds the token's id (`wk-...`), `Modal-Secret` its secret (`ws-...`).
  The server keeps the SHA-256 of each secret, never the secret; `ProxyTokens` holds them in
  memory, so a token made or revoked through the control API counts from the next request.

Pure apart from `new_proxy_token()`'s randomness: tested with tables in tests/unit/test_auth.py.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable

from .._call_wire import TOKEN_HEADER
from .gateway import TargetUnavailable

Headers = list[tuple[bytes, bytes]]
Admit = Callable[[Headers], "TargetUnavailable | None"]

KEY_HEADER = "Modal-Key"
SECRET_HEADER = "Modal-Secret"
KEY_PREFIX = "wk-"
SECRET_PREFIX = "ws-"


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


__all__ = ["KEY_HEADER", "SECRET_HEADER", "ProxyTokens", "call_token_check", "digest", "new_proxy_token"]

"""The Modal token of a wisp server: what `wisp modal env` prints and the gRPC API checks.

Modal's client sends a token id and secret as gRPC metadata on every call. A wisp server has
one such pair, made at its first start and kept in `$WISP_HOME/modal-token` (mode 0600, as the
admin token): it acts as the admin. Stdlib only, so the CLI reads it without the extra.
"""
from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..._config import write_private

MODAL_TOKEN_FILE = "modal-token"


@dataclass(frozen=True)
class ModalToken:
    id: str
    secret: str

    def matches(self, token_id: str, token_secret: str) -> bool:
        """Both halves compared in constant time, so a wrong guess says nothing of either."""
        same_id = hmac.compare_digest(token_id.encode(), self.id.encode())
        same_secret = hmac.compare_digest(token_secret.encode(), self.secret.encode())
        return same_id and same_secret


def read_modal_token(home: Path, *, create: bool = False) -> ModalToken | None:
    """The server's Modal token; made (0600) when `create` and there is none (or it is damaged)."""
    path = home / MODAL_TOKEN_FILE
    try:
        data = json.loads(path.read_text())
        return ModalToken(str(data["id"]), str(data["secret"]))
    except (OSError, ValueError, KeyError, TypeError):
        if not create:
            return None
    # Modal's own tokens look like ak-... / as-...; wisp's say whose they are.
    token = ModalToken("wk-" + secrets.token_hex(8), "ws-" + secrets.token_urlsafe(24))
    write_private(path, json.dumps({"id": token.id, "secret": token.secret}))
    return token

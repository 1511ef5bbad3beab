"""`wisp token create --proxy NAME|list|revoke`: proxy tokens for `requires_proxy_auth=True` endpoints."""
from __future__ import annotations

import argparse
import time

from ..client import ClientError
from . import _common, _output, server


def create(args: argparse.Namespace) -> int:
    client, _ = _common.server(None)
    try:
        made = client.request("POST", "/v1/tokens", {"name": args.proxy})
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    # The secret is printed this once: the server keeps only its hash.
    _output.say(f"Proxy token {made['name']} created. Send both headers with each request to an endpoint "
                "with requires_proxy_auth=True; the secret is not shown again.\n"
                f"Modal-Key: {made['key']}\nModal-Secret: {made['secret']}")
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    client = server.running("create one with `wisp token create --proxy NAME`")
    if client is None:
        return 1
    rows = client.request("GET", "/v1/tokens")["tokens"]
    if not rows:
        _output.say("No proxy tokens yet. `wisp token create --proxy NAME` makes one.")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"]))
        _output.say(f"{row['name']}  key: {row['key']}  created {created}")
    return 0


def revoke(args: argparse.Namespace) -> int:
    return server.request("DELETE", f"/v1/tokens/{args.name}",
                          lambda answer: f"Revoked proxy token {answer['revoked']}: requests carrying it are "
                                         "refused from now on.",
                          "create one with `wisp token create --proxy NAME`")

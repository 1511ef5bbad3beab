"""`wisp token create --proxy NAME|--deploy APP_NAME`, `list`, `revoke`: proxy tokens for
`requires_proxy_auth=True` endpoints; deploy tokens that may deploy, serve and stop one app."""
from __future__ import annotations

import argparse
import time

from .._session import output as _output
from .._session import push as _common
from ..client import ClientError
from . import server


def create(args: argparse.Namespace) -> int:
    try:
        client, _ = _common.server(None)
        made = client.request("POST", "/v1/tokens", {"deploy": args.deploy} if args.deploy else {"name": args.proxy})
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    if args.deploy:
        _output.say(f"Deploy token {made['name']} created for app {made['app']}: it may deploy, serve, stop and read "
                    f"the logs of {made['app']} only. Give it to the CLI as WISP_TOKEN (for example in CI); it is not "
                    f"shown again, and `wisp token revoke {made['name']}` revokes it.\n{made['token']}")
        return 0
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
        _output.say("No tokens yet. `wisp token create --proxy NAME` or `--deploy APP_NAME` makes one.")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"]))
        what = f"deploy token of app {row['app']}" if row.get("kind") == "deploy" else f"proxy token, key: {row['key']}"
        _output.say(f"{row['name']}  {what}  created {created}")
    return 0


def revoke(args: argparse.Namespace) -> int:
    return server.request("DELETE", f"/v1/tokens/{args.name}",
                          lambda answer: f"Revoked token {answer['revoked']}: requests carrying it are "
                                         "refused from now on.",
                          "create one with `wisp token create --proxy NAME`")

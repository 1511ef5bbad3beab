"""`wisp secret create|list|delete`: named secrets on the server. Values are sent, never printed."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .._secret import parse_dotenv
from .._session import output as _output
from .._session import push as _common
from ..client import ClientError
from . import server


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE arguments; the value may itself contain '='."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{key or pair!r} is not KEY=VALUE. Write e.g. `wisp secret create db PASSWORD=...`.")
        out[key] = value
    return out


def create(args: argparse.Namespace) -> int:
    try:
        values = parse_pairs(args.pairs)
        if args.from_dotenv:
            values = {**parse_dotenv(Path(args.from_dotenv).read_text()), **values}
    except (ValueError, OSError) as exc:
        _output.fail(str(exc))
        return 1
    if not values:
        _output.fail("No values given: pass KEY=VALUE arguments or `--from-dotenv FILE`.")
        return 1
    client, _ = _common.server(None)
    try:
        client.request("PUT", f"/v1/secrets/{args.name}", {"values": values, "force": args.force})
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    _output.say(f"Secret {args.name} {'saved' if args.force else 'created'} with keys {', '.join(sorted(values))}. "
                "Apps use its new values from their next serve/deploy.")
    return 0


def list_secrets(args: argparse.Namespace) -> int:
    client = server.running("create one with `wisp secret create NAME KEY=VALUE`")
    if client is None:
        return 1
    rows = client.request("GET", "/v1/secrets")["secrets"]
    if not rows:
        _output.say("No secrets yet. `wisp secret create NAME KEY=VALUE ...` creates one.")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"]))
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["updated_at"]))
        _output.say(f"{row['name']}  keys: {', '.join(row['keys'])}  created {created}  updated {updated}")
    return 0


def delete(args: argparse.Namespace) -> int:
    return server.request("DELETE", f"/v1/secrets/{args.name}",
                          f"Deleted secret {args.name}. Running apps keep its values until their next deploy.",
                          "create one with `wisp secret create NAME KEY=VALUE`")

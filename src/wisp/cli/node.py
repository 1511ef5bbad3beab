"""`wisp node list|drain`: the machines a server's containers run on (a Ray cluster's nodes)."""
from __future__ import annotations

import argparse

from .._session import output as _output
from ..client import ClientError
from . import server


def list_nodes(args: argparse.Namespace) -> int:
    client = server.running("start one: `wisp server start --runtime ray --ray-address HOST:PORT`")
    if client is None:
        return 1
    nodes = client.request("GET", "/v1/nodes")["nodes"]
    rows = [("NAME", "STATE", "ADDRESS", "CPU (RESERVED)", "MEMORY MiB (RESERVED)", "GPU", "CONTAINERS")]
    for n in nodes:
        rows.append((n["name"], n["state"], n["address"], f"{n['cpu']:g} ({n.get('reserved_cpu', 0):g})",
                     f"{n.get('memory_mb', '-')} ({n.get('reserved_memory_mb', '-')})", str(n.get("gpu", 0)),
                     str(n["containers"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _output.say("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def drain(args: argparse.Namespace) -> int:
    client = server.running()
    if client is None:
        return 1
    try:
        answer = client.request("POST", f"/v1/nodes/{args.name}/drain", {})
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    _output.say(f"Node {args.name} is draining: it takes no new container, and its "
                f"{answer['draining_containers']} container(s) finish their requests and stop; "
                "the apps start what they need on the other nodes.")
    return 0

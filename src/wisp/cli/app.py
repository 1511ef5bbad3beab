"""`wisp app list|stop|logs`."""
from __future__ import annotations

import argparse
import time
from typing import Any

from .._session import output as _output
from ..client import ClientError
from . import server


def list_apps(args: argparse.Namespace) -> int:
    client = server.running()
    if client is None:
        return 1
    apps = client.request("GET", "/v1/apps")["apps"]
    if not apps:
        _output.say("No apps yet. `wisp deploy script.py` creates one.")
    for app in apps:
        _output.say(f"{app['id']}  {app['state']}  {app['mode']}  version {app['version']}")
        if app.get("error"):
            _output.say(f"  FAILED: {app['error']}")
        for ep in app["endpoints"]:
            counts = ", ".join(f"{n} {state}" for state, n in sorted(ep["containers"].items())) or "no containers"
            auth = " (proxy auth: send Modal-Key/Modal-Secret)" if ep.get("requires_proxy_auth") else ""
            _output.say(f"  {ep['function']}: {ep['url']}{auth}  [{counts}; {ep['in_flight']} in flight, {ep['queued']} queued]")
            _problem(ep)
        for fn in app.get("functions", []):
            if fn.get("state") == "unplaceable":  # called functions are listed only when they cannot run
                _output.say(f"  {fn['function']} (called function)")
                _problem(fn)
    return 0


def _problem(ep: dict[str, Any]) -> None:
    if ep.get("state") == "unplaceable":
        _output.say(f"    CANNOT RUN HERE: {ep['last_error']}")
    elif ep.get("state") == "failed":
        _output.say(f"    FAILED: containers keep failing to start; last error: {ep['last_error']}")
    elif ep.get("last_error"):
        _output.say(f"    last error: {ep['last_error']}")
    if ep.get("oom_kills"):
        _output.say(f"    killed for memory: {ep['oom_kills']} container(s), the last {ep['last_oom']}")


def stop(args: argparse.Namespace) -> int:
    return server.request("DELETE", f"/v1/apps/{args.name}", f"Stopped app {args.name}.")


def rollback(args: argparse.Namespace) -> int:
    """Deploy a kept earlier version again, as a new version."""
    query = "" if args.version is None else f"?version={args.version}"
    return server.request("POST", f"/v1/apps/{args.name}/rollback{query}",
                          lambda app: f"Rolled {app['name']} back to "
                                      f"{'version ' + str(args.version) if args.version is not None else 'the version before'}"
                                      f": it serves as version {app['version']}.")


def logs(args: argparse.Namespace) -> int:
    client = server.running()
    if client is None:
        return 1
    offset = 0
    try:
        while True:
            text, headers = client.request("GET", f"/v1/apps/{args.name}/logs?offset={offset}")
            print(text, end="", flush=True)
            offset = int(headers.get("x-wisp-log-offset", offset))
            if not args.follow:
                return 0
            time.sleep(0.5)
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    except KeyboardInterrupt:
        return 0

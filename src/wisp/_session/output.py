"""How the CLI shows apps and endpoints."""
from __future__ import annotations

import sys
from typing import Any


def say(text: str = "") -> None:
    print(text, flush=True)


def fail(text: str) -> None:
    print(f"Error: {text}", file=sys.stderr, flush=True)


def endpoints(app: dict[str, Any]) -> None:
    if not app["endpoints"]:
        say("  (no web functions: decorate one with @stub.webhook, @stub.asgi or @stub.wsgi)")
    for ep in app["endpoints"]:
        say(f"  {ep['function']}: {ep['url']}  (also {ep['path_url']})")
    for fn in [*app["endpoints"], *app.get("functions", [])]:
        if fn.get("state") == "unplaceable":  # deployed all the same: it runs once on a machine that can
            say(f"  Warning: `{fn['function']}` cannot run on this machine, so its requests get 503: {fn['last_error']}")

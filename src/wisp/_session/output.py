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

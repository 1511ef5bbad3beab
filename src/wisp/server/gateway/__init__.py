"""The gateway (data plane): an HTTP/1.1 reverse proxy from clients to containers.

Each request is routed by Host name or path prefix (`routing.resolve`) to a `Target` from the
server's live label -> Target mapping; the gateway takes a `Lease` on one of its containers and
streams the request and the response through a pooled keep-alive Unix-socket connection,
with flow control both ways, never holding a body whole.

A request whose response has not started within the redirect window is answered 303 and
runs on detached (`calls`); a WebSocket handshake answered 101 becomes a byte tunnel (`tunnel`).

Modules: `routing` (pure), `request` / `response_head` (head rewriting), `responses` (the
gateway's own JSON answers), `upstream` (container connections and their pool), `exchange`
(one proxied request), `calls` (the redirect chain), `tunnel` (WebSockets), `protocol` (the
client connection), `server` (`Gateway`).
"""
from __future__ import annotations

from ._target import Admit, Lease, PlainTarget, Target, TargetUnavailable
from .routing import resolve
from .server import Gateway

__all__ = ["Admit", "Gateway", "Lease", "PlainTarget", "Target", "TargetUnavailable", "resolve"]

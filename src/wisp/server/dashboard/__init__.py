"""The dashboard (issue 17, a first slice): a page on the control API's loopback address that
shows every app, its functions and their containers, live, and can stop an app.

Its own authentication, not the control token: `wisp dashboard` asks the control API (with the
admin token) for a one-time login link; opening it exchanges the link's code, once and within a
minute, for an HttpOnly, SameSite=Strict session cookie. The token never appears in a URL or in
the page. State-changing requests need the session and a same-origin `Origin` header.

Out of the hot path: the page reads what `AppManager.list()` already computes, once a second per
open page, over server-sent events; nothing is added per request. Every asset is served from this
package (no CDN).
"""
from __future__ import annotations

from .routes import DashboardAuth, dashboard_routes

__all__ = ["DashboardAuth", "dashboard_routes"]

"""The dashboard (issue 17): a page on the control API's loopback address that shows every app,
its functions and their containers, live, with charts and logs, and can stop or roll back an app.

Its own authentication, not the control token: `wisp dashboard` asks the control API (with the
admin token) for a one-time login link; opening it exchanges the link's code, once and within a
minute, for an HttpOnly, SameSite=Strict session cookie. The token never appears in a URL or in
the page. State-changing requests need the session and a same-origin `Origin` header.

Out of the hot path: the page reads what `AppManager.list()` already computes and the history
the server's 1 s tick samples; a request costs the pools one list append. Every asset is served
from this package (no CDN).

Modules: `sessions` (login codes and sessions, pure), `history` (the charts' rings, pure; the
pools feed it), `routes` (the HTTP side, imported by the control API), `static/` (the page).
"""

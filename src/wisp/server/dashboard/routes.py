"""The dashboard's HTTP side, mounted in the control API under /dashboard."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ..apps import DeployError
from ..runtime.capacity import machine_memory_mb
from .history import Node, node_of
from .sessions import Sessions

if TYPE_CHECKING:
    from ..apps import AppManager

COOKIE = "wisp_session"
EVERY = 1.0  # seconds between two snapshots on the live stream
LOG_EVERY = 0.5  # seconds between two looks at a followed log (a file has no change event)
LOG_BACKLOG = 64 * 1024  # what a new log view shows of what was written before it opened
LOGIN_AGAIN = "Open the dashboard through a new link: `wisp dashboard` prints one."


class DashboardAuth:
    """The dashboard's sessions, which the control API's login-link endpoint hands out."""

    def __init__(self) -> None:
        self.sessions = Sessions()

    def login_path(self) -> str:
        return f"/dashboard/login?code={self.sessions.new_code(time.monotonic())}"


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class _Dashboard:
    """The dashboard's endpoints, one method each; `dashboard_routes` routes to them."""

    def __init__(self, manager: AppManager, auth: DashboardAuth) -> None:
        self.manager = manager
        self.sessions = auth.sessions


    def signed_in(self, request: Request) -> bool:
        return self.sessions.valid(request.cookies.get(COOKIE), time.monotonic())

    def refused(self) -> JSONResponse:
        return JSONResponse({"error": f"Not signed in to the wisp dashboard (or the session expired). {LOGIN_AGAIN}"},
                            status_code=401)

    async def login(self, request: Request) -> Response:
        session = self.sessions.redeem(request.query_params.get("code", ""), time.monotonic())
        if session is None:
            return JSONResponse({"error": f"This login link was used already or has expired. {LOGIN_AGAIN}"},
                                status_code=401)
        response = RedirectResponse("/dashboard/", status_code=303)
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/dashboard")
        return response

    async def page(self, request: Request) -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'self'"})

    async def script(self, request: Request) -> Response:
        return Response(_asset("dashboard.js"), media_type="text/javascript; charset=utf-8")

    async def style(self, request: Request) -> Response:
        return Response(_asset("dashboard.css"), media_type="text/css; charset=utf-8")

    async def apps(self, request: Request) -> Response:
        return JSONResponse({"apps": self.manager.list()})

    async def events(self, request: Request) -> Response:
        """A snapshot of every app each second, as server-sent events, while the page is open."""

        async def stream() -> AsyncIterator[bytes]:
            while not await request.is_disconnected():
                yield b"data: " + json.dumps({"apps": self.manager.list(), "at": time.time()}).encode() + b"\n\n"
                await asyncio.sleep(EVERY)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def history(self, request: Request) -> Response:
        """The last 15 minutes of each function of the app, a point a second (the charts)."""
        since = float(request.query_params.get("since", "0") or 0)
        points = self.manager.history.of(request.path_params["app_id"])
        return JSONResponse({fn: [asdict(p) for p in ring if p.at > since] for fn, ring in points.items()})

    async def history_stream(self, request: Request) -> Response:
        """The charts live (server-sent events): the kept points at once, then each second's new ones."""
        app_id = request.path_params["app_id"]

        async def stream() -> AsyncIterator[bytes]:
            since = 0.0
            while not await request.is_disconnected():
                fresh = {fn: [asdict(p) for p in ring if p.at > since] for fn, ring in self.manager.history.of(app_id).items()}
                if any(fresh.values()):
                    since = max(points[-1]["at"] for points in fresh.values() if points)
                    yield b"data: " + json.dumps(fresh).encode() + b"\n\n"
                await asyncio.sleep(EVERY)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def cluster(self, request: Request) -> Response:
        """The nodes (this machine, on the local runtimes), their capacity and what runs there."""
        if self.manager.runtime.name == "ray":  # a cluster's nodes, as `wisp node list` shows them
            return JSONResponse({"nodes": [asdict(Node(f"{n['name']} ({n['state']})", n["cpu"], n["memory_mb"],
                                                       n["reserved_cpu"], n["reserved_memory_mb"], n["containers"]))
                                           for n in self.manager.nodes()]})
        pools = [(p.spec.cpu, p.spec.memory, p.live_count()) for app in self.manager.apps.values() for p in app.pools.values()]
        return JSONResponse({"nodes": [asdict(node_of(socket.gethostname(), float(os.cpu_count() or 1),
                                                      machine_memory_mb(), pools))]})

    async def calls(self, request: Request) -> Response:
        """The app's recent spawned calls: state, function, when, how long (no inputs or answers)."""
        rows = self.manager.store.recent_calls(request.path_params["app_id"])
        now = time.time()
        return JSONResponse({"calls": [
            {"id": r.id, "function": r.function, "state": r.state, "attempts": r.attempts, "created_at": r.created_at,
             "seconds": (r.finished_at or now) - r.created_at} for r in rows]})

    async def stop_container(self, request: Request) -> Response:
        if (refusal := self.action_refused(request)) is not None:
            return refusal
        app = self.manager.apps.get(request.path_params["app_id"])
        cid = request.path_params["container_id"]
        if app is None or not any(pool.stop_container(cid) for pool in app.pools.values()):
            return JSONResponse({"error": f"No running container {cid!r} in that app."}, status_code=404)
        return JSONResponse({"stopping": cid})

    async def versions(self, request: Request) -> Response:
        history = self.manager.store.version_history(request.path_params["app_id"])
        return JSONResponse({"versions": [{"version": v, "deployed_at": t} for v, t in history]})

    async def logs(self, request: Request) -> Response:
        """The app's log as it is written (server-sent events): its last 64 KiB, then new lines."""
        app_id = request.path_params["app_id"]
        if self.manager.store.app(app_id) is None and app_id not in self.manager.logs:
            return JSONResponse({"error": f"No app named {app_id!r}."}, status_code=404)
        log = self.manager.log(app_id)

        async def stream() -> AsyncIterator[bytes]:
            offset = max(log.read(0)[1] - LOG_BACKLOG, 0)
            while not await request.is_disconnected():
                text, offset = log.read(offset)
                if text:
                    yield b"data: " + json.dumps({"lines": text.splitlines()}).encode() + b"\n\n"
                await asyncio.sleep(LOG_EVERY)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    def action_refused(self, request: Request) -> JSONResponse | None:
        """An action (its session checked by the route) must come from the dashboard's own page (Origin)."""
        if request.headers.get("origin", "") != f"{request.url.scheme}://{request.url.netloc}":
            return JSONResponse({"error": "Refused: an action must come from the dashboard's own page."},
                                status_code=403)
        return None

    async def rollback(self, request: Request) -> Response:
        if (refusal := self.action_refused(request)) is not None:
            return refusal
        try:
            version = int((await request.json())["version"])
            result = await self.manager.rollback(request.path_params["app_id"], version)
        except (KeyError, TypeError, ValueError):
            return JSONResponse({"error": 'Send {"version": N}.'}, status_code=400)
        except DeployError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse({"version": result["version"]})

    async def stop_app(self, request: Request) -> Response:
        if (refusal := self.action_refused(request)) is not None:
            return refusal
        app_id = request.path_params["app_id"]
        if not await self.manager.stop(app_id):
            return JSONResponse({"error": f"No app named {app_id!r}."}, status_code=404)
        return JSONResponse({"stopped": app_id})


# The only dashboard paths answered without a session: the login link and the page's static assets.
PUBLIC = frozenset({"/dashboard/login", "/dashboard/dashboard.js", "/dashboard/dashboard.css"})
Endpoint = Callable[[Request], Awaitable[Response]]


def _session_only(d: _Dashboard, endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        if not d.signed_in(request):
            return d.refused()
        return await endpoint(request)

    return guarded


def dashboard_routes(manager: AppManager, auth: DashboardAuth) -> list[Route]:
    """The dashboard's routes: every one but PUBLIC's needs the session, checked here once, so a
    route added below cannot forget it."""
    d = _Dashboard(manager, auth)
    return [route if route.path in PUBLIC else Route(route.path, _session_only(d, route.endpoint), methods=route.methods)
            for route in _routes(d)]


def _routes(d: _Dashboard) -> list[Route]:
    return [
        Route("/dashboard/login", d.login),
        Route("/dashboard/", d.page),
        Route("/dashboard/dashboard.js", d.script),
        Route("/dashboard/dashboard.css", d.style),
        Route("/dashboard/api/apps", d.apps),
        Route("/dashboard/api/events", d.events),
        Route("/dashboard/api/apps/{app_id}/stop", d.stop_app, methods=["POST"]),
        Route("/dashboard/api/apps/{app_id}/versions", d.versions),
        Route("/dashboard/api/apps/{app_id}/history", d.history),
        Route("/dashboard/api/apps/{app_id}/history/stream", d.history_stream),
        Route("/dashboard/api/apps/{app_id}/calls", d.calls),
        Route("/dashboard/api/cluster", d.cluster),
        Route("/dashboard/api/apps/{app_id}/containers/{container_id}/stop", d.stop_container, methods=["POST"]),
        Route("/dashboard/api/apps/{app_id}/rollback", d.rollback, methods=["POST"]),
        Route("/dashboard/api/apps/{app_id}/logs", d.logs),
    ]


"""The control plane's HTTP API, used by the CLI. Loopback only; every call carries the token."""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._call_wire import CONTENT_TYPE
from .._secret import check_env, check_name
from .._urls import app_id_for
from .apps import AppManager, DeployError
from .auth import ADMIN, Principal, action_of, app_refusal, route_refusal
from .dashboard.routes import DashboardAuth, dashboard_routes
from .spawned import RESULT_TTL

MAX_BODY_SIZE = 100 * 1024 * 1024  # the gateway's default (WISP_MAX_BODY_SIZE)
SPEC_ROOM = 16 * 1024 * 1024  # what a deploy request may carry beside its files (the spec, JSON)


async def _body_within(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it is seen to be larger than `limit` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _app_refusal(request: Request, app_name: str | None) -> JSONResponse | None:
    """403 when the request's token is a deploy token of another app."""
    message = app_refusal(request.scope.get("wisp_principal", ADMIN), app_name)
    return None if message is None else _error(403, message)


class _ControlAPI:
    """The control API's endpoints, one method each; `build_control_app` routes to them."""

    def __init__(self, manager: AppManager, shutdown: Callable[[], dict[str, Any]], info: dict[str, Any],
                 max_body_size: int) -> None:
        self.manager = manager
        self.shutdown = shutdown
        self.info = info
        self.max_body_size = max_body_size  # of a spawned call's arguments, as the gateway's for .remote()

    def _refused_for(self, request: Request) -> JSONResponse | None:
        return _app_refusal(request, self.manager.app_name(request.path_params["app_id"], request.scope.get("wisp_principal")))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "pid": os.getpid(), **self.info})

    async def put_app(self, request: Request) -> Response:
        limit = self.manager.bundle_limits.compressed * 4 // 3 + SPEC_ROOM  # the bundle in base64, and the spec
        raw = await _body_within(request, limit)
        if raw is None:
            return _error(413, f"The deploy request is larger than the server takes ({limit >> 20} MiB, from "
                               "WISP_MAX_BUNDLE_MB): keep large data out of the script's folder (load it at run "
                               "time), or raise the limit on the server.")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "The deploy request is not JSON; use the wisp CLI of the same version as the server.")
        try:
            files = base64.b64decode(body["files"], validate=True)
            mode = body.get("mode", "deploy")
            refused = _app_refusal(request, str(body["spec"]["name"]))
            if refused is not None:
                return refused
            if mode not in ("deploy", "serve", "run"):
                return _error(400, f"mode must be 'deploy', 'serve' or 'run', got {mode!r}.")
            expected = app_id_for(str(body["spec"]["name"]), mode, body.get("owner"))
            if request.path_params["app_id"] != expected:
                return _error(400, f"The path names app {request.path_params['app_id']!r}, but a {mode} of "
                                   f"{body['spec']['name']!r} is app {expected!r}: PUT it to /v1/apps/{expected}.")
            args: DeployArgs = (body["spec"], mode, files, body.get("owner"))
            if "application/x-ndjson" in request.headers.get("accept", ""):  # build progress, then the result
                return StreamingResponse(_deploy_events(self.manager, args), media_type="application/x-ndjson")
            result = await self.manager.deploy(*args)
        except (KeyError, TypeError, binascii.Error) as exc:
            return _error(400, f"Malformed deploy request ({exc!r}); use the wisp CLI of the same version as the server.")
        except DeployError as exc:
            return _error(exc.status, exc.message)
        return JSONResponse(result)

    async def rollback(self, request: Request) -> Response:
        raw = request.query_params.get("version")
        if raw is not None and not raw.isdigit():
            return _error(400, f"version={raw!r} is not a version number; `wisp app list` shows the current one.")
        try:
            result = await self.manager.rollback(request.path_params["app_id"], int(raw) if raw else None)
        except DeployError as exc:
            return _error(exc.status, exc.message)
        return JSONResponse(result)

    async def list_nodes(self, request: Request) -> Response:
        return JSONResponse({"nodes": self.manager.nodes()})

    async def drain_node(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            draining = self.manager.drain_node(name)
        except DeployError as exc:
            return _error(exc.status, exc.message)
        return JSONResponse({"node": name, "draining_containers": draining})

    async def list_images(self, request: Request) -> Response:
        return JSONResponse({"images": self.manager.builder.list_images(self.manager.images_in_use())})

    async def prune_images(self, request: Request) -> Response:
        return JSONResponse(self.manager.builder.prune(self.manager.images_in_use()))

    async def list_apps(self, request: Request) -> Response:
        who = request.scope.get("wisp_principal", ADMIN)
        return JSONResponse({"apps": [a for a in self.manager.list() if who.kind == "admin" or a["name"] == who.app]})

    async def stop_app(self, request: Request) -> Response:
        app_id = request.path_params["app_id"]
        if (refused := self._refused_for(request)) is not None:
            return refused
        if not await self.manager.stop(app_id, request.query_params.get("owner")):
            return _error(404, f"No app named {app_id!r}. `wisp app list` shows the apps.")
        return JSONResponse({"stopped": app_id})

    async def logs(self, request: Request) -> Response:
        app_id = request.path_params["app_id"]
        if (refused := self._refused_for(request)) is not None:
            return refused
        if self.manager.store.app(app_id) is None and app_id not in self.manager.logs:
            return _error(404, f"No app named {app_id!r}. `wisp app list` shows the apps.")
        raw = request.query_params.get("offset", "0")
        if not raw.isascii() or not raw.isdigit():
            return _error(400, f"offset={raw!r} is not a byte offset: give a whole number of bytes, 0 or more "
                               "(the x-wisp-log-offset header of the previous answer).")
        text, offset = self.manager.log(app_id).read(int(raw))
        return PlainTextResponse(text, headers={"x-wisp-log-offset": str(offset)})

    async def heartbeat(self, request: Request) -> Response:
        app_id = request.path_params["app_id"]
        if (refused := self._refused_for(request)) is not None:
            return refused
        owner = request.query_params.get("owner", "")
        if not self.manager.heartbeat(app_id, owner):
            return _error(409, f"App {app_id!r} is no longer served by this `wisp serve`.")
        return JSONResponse({"ok": True})

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(self.manager.metrics.render(), media_type="text/plain; version=0.0.4")

    def _visible(self, request: Request, call_id: str) -> Any:
        """The call, if the caller may see it: the admin sees all, an app's token its own app's."""
        row = self.manager.calls.find(call_id)
        scope_app = request.scope.get("wisp_app")
        if row is None or (scope_app is not None and row.app_id != scope_app):
            return None
        return row

    async def spawn_call(self, request: Request) -> Response:
        app_id = request.query_params.get("app", "")
        function = request.query_params.get("function", "")
        scope_app = request.scope.get("wisp_app")
        if scope_app is not None and app_id != scope_app:
            return _error(403, f"This token belongs to app {scope_app!r}; it cannot call functions of {app_id!r}.")
        body = await _body_within(request, self.max_body_size)
        if body is None:
            return _error(413, f"The call's arguments are larger than the server's limit of {self.max_body_size} "
                               "bytes (WISP_MAX_BODY_SIZE); pass large data another way (a file, a URL).")
        if self.manager._call_pool(app_id, function) is None:
            return _error(404, f"App {app_id!r} runs no function `{function}` that can be called (web endpoints "
                               "are called through their URL). `wisp app list` shows what runs.")
        call_id = self.manager.calls.spawn(app_id, function, body)
        return JSONResponse({"call_id": call_id}, status_code=201)

    async def get_call(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        if self._visible(request, call_id) is None:
            return _missing_call(call_id)
        try:
            timeout = float(request.query_params.get("timeout", "0"))
        except ValueError:
            return _error(400, "timeout must be a number of seconds.")
        row = await self.manager.calls.wait(call_id, timeout)
        if row is None:
            return _missing_call(call_id)
        if row.state == "pending":
            return JSONResponse({"call_id": call_id, "state": "pending"}, status_code=202)
        return Response(row.answer, media_type=CONTENT_TYPE, headers={"x-wisp-call-state": row.state})

    async def cancel_call(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        if self._visible(request, call_id) is None:
            return _missing_call(call_id)
        self.manager.calls.cancel(call_id)
        return JSONResponse({"call_id": call_id, "cancelled": True})

    async def list_secrets(self, request: Request) -> Response:  # names, key names and dates: never values
        return JSONResponse({"secrets": [{"name": row.name, "keys": sorted(row.values), "created_at": row.created_at,
                                          "updated_at": row.updated_at} for row in self.manager.store.secrets()]})

    async def put_secret(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            body = await request.json()
            check_name(name)
            values = check_env(body["values"], f"secret {name!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return _error(400, f"Malformed secret: {exc}. Send {{\"values\": {{\"KEY\": \"value\"}}}}.")
        if not self.manager.store.put_secret(name, values, replace=bool(body.get("force"))):
            return _error(409, f"Secret {name!r} already exists. Use `wisp secret create {name} ... --force` "
                               "to replace its values.")
        return JSONResponse({"name": name, "keys": sorted(values)})

    async def delete_secret(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.manager.store.delete_secret(name):
            return _error(404, f"No secret named {name!r}. `wisp secret list` shows the secrets.")
        return JSONResponse({"deleted": name})

    async def list_tokens(self, request: Request) -> Response:  # names, keys and dates: secrets are not kept
        proxy = [{"kind": "proxy", "name": row.name, "key": row.key, "created_at": row.created_at}
                 for row in self.manager.store.proxy_tokens()]
        deploy = [{"kind": "deploy", "name": row.name, "app": row.app_name, "created_at": row.created_at}
                  for row in self.manager.store.deploy_tokens()]
        return JSONResponse({"tokens": proxy + deploy})

    async def create_token(self, request: Request) -> Response:
        try:
            body = await request.json()
            if "deploy" in body:
                made = self.manager.create_deploy_token(check_name(body["deploy"]))
                return JSONResponse(made, status_code=201)
            name = check_name(body["name"])
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, f"Malformed token request: {exc}. Send {{\"name\": \"NAME\"}} for a proxy token or "
                               "{\"deploy\": \"APP_NAME\"} for a deploy token.")
        proxy = self.manager.create_proxy_token(name)
        if proxy is None:
            return _error(409, f"A proxy token named {name!r} exists. Revoke it with `wisp token revoke {name}`, "
                               "or choose another name.")
        return JSONResponse(proxy, status_code=201)

    async def revoke_token(self, request: Request) -> Response:
        name = self.manager.revoke_proxy_token(request.path_params["name"])
        if name is None:
            name = self.manager.revoke_deploy_token(request.path_params["name"])
        if name is None:
            return _error(404, f"No token named {request.path_params['name']!r}. `wisp token list` shows them.")
        return JSONResponse({"revoked": name})

    async def stop_server(self, request: Request) -> Response:
        if request.query_params.get("if_idle") and (self.manager.apps or self.manager.deploying):
            return _error(409, "Apps are running or being deployed on this server; it keeps running.")
        return JSONResponse({"stopping": True, **self.shutdown()})


def build_control_app(manager: AppManager, token: str, shutdown: Callable[[], dict[str, Any]],
                      info: dict[str, Any], max_body_size: int = MAX_BODY_SIZE) -> ASGIApp:
    """`shutdown()` starts the server's stop and says how (its grace, requests in progress)."""
    routes = control_routes(manager, shutdown, info, DashboardAuth(), max_body_size)
    return _require_token(Starlette(routes=routes), f"Bearer {token}".encode(), manager.identify)


def control_routes(manager: AppManager, shutdown: Callable[[], dict[str, Any]], info: dict[str, Any],
                   dashboard: DashboardAuth, max_body_size: int = MAX_BODY_SIZE) -> list[Route]:
    """Every route of the control API. Each one needs a token (`_require_token`) but the
    dashboard's, which need its session (`dashboard.routes.PUBLIC` excepted); the e2e tests walk
    this list, so a route added here without either fails them."""
    api = _ControlAPI(manager, shutdown, info, max_body_size)

    async def dashboard_login(request: Request) -> Response:
        """A one-time link to the dashboard (admin token only): `wisp dashboard` prints it."""
        return JSONResponse({"path": dashboard.login_path()}, status_code=201)

    routes = [
        Route("/v1/dashboard/login", dashboard_login, methods=["POST"]),
        *dashboard_routes(manager, dashboard),
        Route("/v1/health", api.health),
        Route("/v1/apps", api.list_apps),
        Route("/v1/apps/{app_id}", api.put_app, methods=["PUT"]),
        Route("/v1/apps/{app_id}", api.stop_app, methods=["DELETE"]),
        Route("/v1/apps/{app_id}/logs", api.logs),
        Route("/v1/apps/{app_id}/heartbeat", api.heartbeat, methods=["POST"]),
        Route("/v1/apps/{app_id}/rollback", api.rollback, methods=["POST"]),
        Route("/v1/nodes", api.list_nodes),
        Route("/v1/nodes/{name}/drain", api.drain_node, methods=["POST"]),
        Route("/v1/images", api.list_images),
        Route("/v1/images/prune", api.prune_images, methods=["POST"]),
        Route("/v1/secrets", api.list_secrets),
        Route("/v1/secrets/{name}", api.put_secret, methods=["PUT"]),
        Route("/v1/secrets/{name}", api.delete_secret, methods=["DELETE"]),
        Route("/v1/tokens", api.list_tokens),
        Route("/v1/tokens", api.create_token, methods=["POST"]),
        Route("/v1/tokens/{name}", api.revoke_token, methods=["DELETE"]),
        Route("/v1/shutdown", api.stop_server, methods=["POST"]),
        Route("/v1/calls", api.spawn_call, methods=["POST"]),
        Route("/v1/calls/{call_id}", api.get_call, methods=["GET"]),
        Route("/v1/calls/{call_id}", api.cancel_call, methods=["DELETE"]),
        Route("/metrics", api.metrics),
    ]
    return routes


DeployArgs = tuple[dict[str, Any], str, bytes, "str | None"]


async def _deploy_events(manager: AppManager, args: DeployArgs) -> AsyncIterator[bytes]:
    """NDJSON: one line per build event as it happens, then {"result": ...} or {"error": ...}.

    The deploy runs on in its own task even if the client goes away, as a plain PUT would.
    """
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(manager.deploy(*args, progress=events.put_nowait))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even if the client left
    while not task.done() or not events.empty():
        getter = asyncio.ensure_future(events.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            continue
        yield json.dumps(getter.result()).encode() + b"\n"
    try:
        final: dict[str, Any] = {"result": task.result()}
    except DeployError as exc:
        final = {"error": exc.message, "status": exc.status}
    except Exception as exc:  # a bug: say so rather than cut the stream
        final = {"error": f"The deploy failed inside the server: {exc!r}. See $WISP_HOME/server.log.", "status": 500}
    yield json.dumps(final).encode() + b"\n"


def _missing_call(call_id: str) -> JSONResponse:
    return _error(404, f"No call {call_id!r} for this app: a wrong id, or its result expired "
                       f"(results are kept {RESULT_TTL / 3600:g} h).")


def _require_token(app: ASGIApp, expected: bytes, identify: Callable[[str], Principal | None]) -> ASGIApp:
    """Every control call carries a token: the server's admin token (the file $WISP_HOME/token,
    mode 0600), a deploy token of one app, or (for `/v1/calls`) an app's call token. Unknown
    tokens get 401; a known token asking for what it may not do gets 403 saying what it may do."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the control API has none: refused before any route is looked at
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http" and not scope["path"].startswith("/dashboard/"):  # it has its own sessions
            given = dict(scope["headers"]).get(b"authorization", b"")
            who = ADMIN if hmac.compare_digest(given, expected) else None
            if who is None and given.startswith(b"Bearer "):
                who = identify(given[7:].decode("latin-1"))
            if who is None:
                response = _error(401, "Missing or wrong token. The CLI sends $WISP_TOKEN when set, else the server's "
                                       "admin token from $WISP_HOME/token; `wisp token create --deploy APP_NAME` "
                                       "makes a token for one app.")
                await response(scope, receive, send)
                return
            refusal = route_refusal(who, action_of(scope["method"], scope["path"]))
            if refusal is not None:
                await _error(403, refusal)(scope, receive, send)
                return
            scope["wisp_principal"] = who
            scope["wisp_app"] = who.app if who.kind == "call" else None
        await app(scope, receive, send)

    return guarded


__all__ = ["build_control_app"]

"""The server's own surfaces, hardened (issue 15, point 6), against a real server: every control
route and every Modal RPC needs its token, hostile bundles are refused with a 4xx saying what to
do, and the gateway refuses smuggling, caps connections and times out stalled bodies (raw sockets)."""
from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import os
import re
import shutil
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality

from rawhttp import send_and_read
from wisp._session.package import Target, inspect_app
from wisp._urls import app_id_for
from wisp.server.control import control_routes
from wisp.server.dashboard.routes import PUBLIC, DashboardAuth
from wisp.server.modal_api.service import Servicer

from .conftest import Wisp, free_port, start_wisp

pytestmark = pytest.mark.e2e
APP = Path(__file__).parent / "apps" / "http_bodies.py"
SHA = "/http-bodies--sha/"
SETTINGS = {"WISP_MAX_BUNDLE_MB": "1", "WISP_MAX_UNPACKED_MB": "2", "WISP_BODY_TIMEOUT": "1",
            "WISP_MAX_CLIENT_CONNECTIONS": "8"}


@pytest.fixture(scope="module")
def wisp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    root = tmp_path_factory.mktemp("hardening")
    w = start_wisp(root / "home", {**SETTINGS, "WISP_MODAL_PORT": str(free_port())})
    try:
        shutil.copy(APP, root / APP.name)
        w.run("deploy", str(root / APP.name))
        yield w
    finally:
        w.run("server", "stop", check=False)


def info(wisp: Wisp) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((wisp.home / "server.json").read_text())
    return result


def control(wisp: Wisp, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", info(wisp)["admin_port"], timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def admin_token(wisp: Wisp) -> dict[str, str]:
    return {"Authorization": f"Bearer {(wisp.home / 'token').read_text().strip()}"}


# -- the control API and the Modal API: no answer without a token ----------------------------
def every_route() -> list[tuple[str, str]]:
    """(method, path) of every route the control API has, its parameters filled in."""
    routes = control_routes(cast(Any, None), dict, {}, DashboardAuth())  # nothing of the manager is used to list them
    out = []
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        out += [(method, path) for method in sorted(route.methods or ())]
    return out


def test_every_control_route_answers_401_without_its_token(wisp: Wisp) -> None:
    routes = every_route()
    assert len(routes) > 40  # the whole table, GET routes with their HEAD
    bearer_routes = [(m, p) for m, p in routes if not p.startswith("/dashboard/")]
    assert ("GET", "/metrics") in bearer_routes and ("GET", "/v1/health") in bearer_routes
    for method, path in bearer_routes:
        for headers in ({}, {"Authorization": "Bearer wd-not-a-token"}, {"Authorization": "Basic eDp5"}):
            status, body = control(wisp, method, path, headers)
            assert status == 401, (method, path, headers, body)
            if method != "HEAD":
                assert b"Missing or wrong token" in body
    assert control(wisp, "GET", "/v1/no-such-route")[0] == 401  # unknown paths too: nothing is told


def test_every_dashboard_route_but_login_and_assets_needs_the_session(wisp: Wisp) -> None:
    dashboard = [(m, p) for m, p in every_route() if p.startswith("/dashboard/")]
    assert {p for _, p in dashboard} >= PUBLIC and len(PUBLIC) == 3
    guarded = [(m, p) for m, p in dashboard if p not in PUBLIC]
    assert len(guarded) >= 12
    for method, path in guarded:
        for headers in ({}, admin_token(wisp), {"Cookie": "wisp_session=forged"}):  # the bearer token is not a session
            status, body = control(wisp, method, path, headers)
            assert status == 401, (method, path, headers, body)
            if method != "HEAD":
                assert b"Not signed in to the wisp dashboard" in body
    # The login flow still works: the admin's link, then the session it gives.
    status, body = control(wisp, "POST", "/v1/dashboard/login", admin_token(wisp))
    assert status == 201
    conn = http.client.HTTPConnection("127.0.0.1", info(wisp)["admin_port"], timeout=30)
    try:
        conn.request("GET", json.loads(body)["path"])
        login = conn.getresponse()
        login.read()
    finally:
        conn.close()
    cookie = login.getheader("set-cookie", "").split(";")[0]
    assert login.status == 303 and cookie.startswith("wisp_session=")
    assert control(wisp, "GET", "/dashboard/api/apps", {"Cookie": cookie})[0] == 200


def test_a_websocket_to_the_control_api_is_refused(wisp: Wisp) -> None:
    with socket.create_connection(("127.0.0.1", info(wisp)["admin_port"]), timeout=30) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        answer = sock.recv(4096)
    assert answer and not answer.startswith(b"HTTP/1.1 101"), answer


async def _rpc(port: int, path: str, metadata: dict[str, str]) -> Status | None:
    channel = Channel("127.0.0.1", port)
    try:
        stream = channel.request(path, Cardinality.UNARY_UNARY, empty_pb2.Empty, empty_pb2.Empty, metadata=metadata)
        async with stream:
            await stream.send_message(empty_pb2.Empty(), end=True)
            await stream.recv_message()
    except GRPCError as exc:
        return exc.status
    finally:
        channel.close()
    return None


def test_every_modal_rpc_is_unauthenticated_without_the_token(wisp: Wisp) -> None:
    paths = sorted(Servicer().__mapping__())  # every RPC of Modal's ModalClient service, as the server maps them
    assert len(paths) > 100 and "/modal.client.ModalClient/AppList" in paths
    port = info(wisp)["modal_port"]

    async def all_of_them() -> list[tuple[str, Status | None]]:
        found = []
        for path in paths:
            for metadata in ({}, {"x-modal-token-id": "ak-x", "x-modal-token-secret": "as-y"}):
                found.append((path, await _rpc(port, path, metadata)))
        return found

    answered = [(path, status) for path, status in asyncio.run(all_of_them()) if status != Status.UNAUTHENTICATED]
    assert answered == []


# -- bundles ----------------------------------------------------------------------------------
TINY_SOURCE = b"import wisp\n\nstub = wisp.Stub('tiny')\n\n\n@stub.webhook\ndef hi():\n    return 'hi'\n"


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("bundle-app")
    (folder / "tiny.py").write_bytes(TINY_SOURCE)
    result: dict[str, Any] = inspect_app(Target.parse(str(folder / "tiny.py")))
    return result


def tar_gz(*members: tuple[str, bytes, bytes, str]) -> bytes:
    """(name, tar type, data, link name) each."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind, data, link in members:
            member = tarfile.TarInfo(name)
            member.type, member.linkname, member.size = kind, link, len(data)
            tar.addfile(member, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def deploy(wisp: Wisp, spec: dict[str, Any], files: bytes) -> tuple[int, str]:
    body = json.dumps({"spec": spec, "mode": "deploy", "files": base64.b64encode(files).decode()}).encode()
    status, answer = control(wisp, "PUT", f"/v1/apps/{app_id_for(spec['name'], 'deploy', None)}",
                             {**admin_token(wisp), "Content-Type": "application/json"}, body)
    return status, json.loads(answer).get("error", "")


TINY = ("tiny.py", tarfile.REGTYPE, TINY_SOURCE, "")


@pytest.mark.parametrize(("member", "said"), [
    (("../../../escaped.py", tarfile.REGTYPE, b"x = 1\n", ""), "`..`"),
    (("/tmp/wisp-absolute.py", tarfile.REGTYPE, b"x = 1\n", ""), "absolute name"),
    (("token", tarfile.SYMTYPE, b"", "../../../token"), "symlink"),
    (("passwd", tarfile.SYMTYPE, b"", "/etc/passwd"), "symlink"),
    (("shadow", tarfile.LNKTYPE, b"", "/etc/shadow"), "hard link"),
    (("null", tarfile.CHRTYPE, b"", ""), "device file"),
    (("pipe", tarfile.FIFOTYPE, b"", ""), "FIFO"),
])
def test_a_bundle_reaching_outside_its_folder_is_refused(wisp: Wisp, spec: dict[str, Any],
                                                         member: tuple[str, bytes, bytes, str], said: str) -> None:
    status, error = deploy(wisp, spec, tar_gz(TINY, member))
    assert status == 400, error
    assert said in error and "deploy again" in error, error
    assert not (wisp.home / "apps" / "tiny").exists() or not any((wisp.home / "apps" / "tiny").iterdir())
    assert not Path("/tmp/wisp-absolute.py").exists()


def test_bundles_over_the_size_limits_are_413_naming_the_setting(wisp: Wisp, spec: dict[str, Any]) -> None:
    status, error = deploy(wisp, spec, tar_gz(TINY, ("noise.bin", tarfile.REGTYPE, os.urandom(1536 * 1024), "")))
    assert (status, "WISP_MAX_BUNDLE_MB" in error) == (413, True), error
    status, error = deploy(wisp, spec, tar_gz(TINY, ("zeros.bin", tarfile.REGTYPE, bytes(3 * 1024 * 1024), "")))
    assert (status, "WISP_MAX_UNPACKED_MB" in error) == (413, True), error
    # A request body larger than any bundle could be is refused before it is read.
    status, answer = control(wisp, "PUT", "/v1/apps/tiny", {**admin_token(wisp), "Content-Length": str(10**9)})
    assert status == 413 and b"WISP_MAX_BUNDLE_MB" in answer
    assert deploy(wisp, spec, tar_gz(TINY))[0] == 200  # a bundle within the limits deploys


def test_a_spawned_call_larger_than_the_body_limit_is_413_unread(wisp: Wisp) -> None:
    status, answer = control(wisp, "POST", "/v1/calls?app=tiny&function=hi",
                             {**admin_token(wisp), "Content-Length": str(10**9)})
    assert status == 413 and b"WISP_MAX_BODY_SIZE" in answer


# -- the gateway, over raw sockets ------------------------------------------------------------
def exchange(wisp: Wisp, raw: bytes, source: str = "127.0.0.1") -> bytes:
    return send_and_read(wisp.port, raw, source=source)


POST = f"POST {SHA} HTTP/1.1\r\nHost: x\r\n".encode()
CLOSE = f"POST {SHA} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".encode()


@pytest.mark.parametrize("raw", [
    POST + b"Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /http-bodies--sha/ HTTP/1.1\r\n\r\n",
    POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    POST + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
    POST + b"X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
])
def test_smuggling_and_malformed_framing_are_400(wisp: Wisp, raw: bytes) -> None:
    data = exchange(wisp, raw)
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"connection: close" in data.partition(b"\r\n\r\n")[0]
    assert b"not valid HTTP/1.1" in data or b"Content-Length" in data
    assert exchange(wisp, CLOSE).startswith(b"HTTP/1.1 200 ")


def test_connections_past_the_per_client_cap_get_503(wisp: Wisp) -> None:
    held = [socket.create_connection(("127.0.0.1", wisp.port), timeout=60, source_address=("127.0.0.7", 0))
            for _ in range(8)]
    try:
        for sock in held:  # each admitted one is served, and stays open (keep-alive)
            sock.sendall(POST + b"Content-Length: 5\r\n\r\nhello")
            assert sock.recv(12) == b"HTTP/1.1 200"
        refused = exchange(wisp, CLOSE, source="127.0.0.7")
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        assert b"WISP_MAX_CLIENT_CONNECTIONS" in refused
        assert exchange(wisp, CLOSE, source="127.0.0.8").startswith(b"HTTP/1.1 200 ")  # another address
    finally:
        for sock in held:
            sock.close()


def test_a_stalled_body_is_408(wisp: Wisp) -> None:
    data = exchange(wisp, POST + b"Content-Length: 100\r\n\r\n" + b"x" * 10)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"no byte of it came for 1 s" in data
    assert exchange(wisp, CLOSE).startswith(b"HTTP/1.1 200 ")

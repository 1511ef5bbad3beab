"""The RPCs of Modal's `ModalClient` service that wisp answers, over its own `AppManager`.

grpclib routes by the mapping that the generated `ModalClientBase.__mapping__` builds from the
handler attributes of the object it is given. `ModalService` defines the handlers wisp
implements; for any other name `__getattr__` gives a handler that answers UNIMPLEMENTED naming
the RPC, so the client's error says what is missing rather than failing in transport.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpclib.const
from google.protobuf import empty_pb2, timestamp_pb2
from grpclib import GRPCError, Status
from modal_proto import api_pb2
from modal_proto.api_grpc import ModalClientBase

from ..._secret import check_env, check_name
from .translate import (
    APP_STATE_DEPLOYED,
    LogLine,
    app_item,
    app_state,
    dated_lines,
    log_window,
    secret_action,
    secret_id,
    secret_name,
)

if TYPE_CHECKING:
    from grpclib.server import Stream

    from ..apps import AppManager
    from ..store import SecretRow

Handler = Callable[["Stream[Any, Any]"], Awaitable[None]]


def unimplemented(name: str) -> Handler:
    async def handler(stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED,
                        f"wisp does not implement the Modal RPC {name} yet; see docs/modal-compatibility.md "
                        "for what a wisp server answers, or use the wisp CLI for this.")
    return handler


class ModalService:
    """What a `modal` client sees of a wisp server."""

    def __init__(self, manager: AppManager) -> None:
        self.manager = manager

    def __getattr__(self, name: str) -> Handler:
        if name[:1].isupper():  # an RPC of ModalClient that this class does not define
            return unimplemented(name)
        raise AttributeError(name)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        # The generated base only reads handler attributes off `self`; this object provides them.
        mapping: dict[str, grpclib.const.Handler] = ModalClientBase.__mapping__(self)  # type: ignore[arg-type]  # duck-typed servicer
        return mapping

    # -- the client's handshake -------------------------------------------------------------------
    async def ClientHello(self, stream: Stream[empty_pb2.Empty, api_pb2.ClientHelloResponse]) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.ClientHelloResponse())

    # -- apps: `modal app list`, `modal app stop` ---------------------------------------------------
    async def AppList(self, stream: Stream[api_pb2.AppListRequest, api_pb2.AppListResponse]) -> None:
        await stream.recv_message()
        created = {row.id: row.created_at for row in self.manager.store.apps()}
        items = []
        for described in self.manager.list():
            item = app_item(described, created.get(described["id"], 0.0))
            items.append(api_pb2.AppListResponse.AppListItem(
                app_id=item.app_id, description=item.description, state=item.state,  # type: ignore[arg-type]  # an AppState number
                n_running_tasks=item.n_running_tasks, created_at=item.created_at, name=item.name))
        await stream.send_message(api_pb2.AppListResponse(apps=items))

    async def AppGetByDeploymentName(
            self, stream: Stream[api_pb2.AppGetByDeploymentNameRequest, api_pb2.AppGetByDeploymentNameResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        row = self.manager.store.app(request.name)  # a deployed app's id is its name
        environment = request.environment_name or "main"
        if row is None or row.mode != "deploy":
            await stream.send_message(api_pb2.AppGetByDeploymentNameResponse(environment_name=environment))
            return
        state = app_state(row.mode, "running" if self.manager.running_or_stopping(row.id) else "stopped")
        lifecycle = api_pb2.AppLifecycle(app_state=state, created_at=row.created_at,  # type: ignore[arg-type]  # an AppState number
                                         deployed_at=row.updated_at, version=row.version,
                                         stopped_at=0.0 if state == APP_STATE_DEPLOYED else row.updated_at)
        # A stopped app is named as Modal names a recently stopped one: its previous id.
        deployed = state == APP_STATE_DEPLOYED
        await stream.send_message(api_pb2.AppGetByDeploymentNameResponse(
            app_id=row.id if deployed else "", previous_app_id="" if deployed else row.id,
            environment_name=environment, lifecycle=lifecycle))

    async def TaskList(self, stream: Stream[api_pb2.TaskListRequest, api_pb2.TaskListResponse]) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.TaskListResponse())  # containers are wisp's to list

    async def AppStop(self, stream: Stream[api_pb2.AppStopRequest, empty_pb2.Empty]) -> None:
        request = await stream.recv_message()
        assert request is not None
        if not await self.manager.stop(request.app_id):
            raise GRPCError(Status.NOT_FOUND, f"No app {request.app_id!r} on this wisp server; `modal app list` "
                                              "shows the apps.")
        await stream.send_message(empty_pb2.Empty())

    # -- logs: `modal app logs NAME [-f]` ----------------------------------------------------------
    def _known_app(self, app_id: str) -> None:
        if self.manager.store.app(app_id) is None and app_id not in self.manager.logs:
            raise GRPCError(Status.NOT_FOUND, f"No app {app_id!r} on this wisp server; `modal app list` shows them.")

    async def AppFetchLogs(self, stream: Stream[api_pb2.AppFetchLogsRequest, api_pb2.AppFetchLogsResponse]) -> None:
        """A time window of the app's log, the last `limit` lines of it (`modal app logs NAME`)."""
        request = await stream.recv_message()
        assert request is not None
        self._known_app(request.app_id)
        log = self.manager.log(request.app_id)
        text, _ = log.read(0)
        lines = dated_lines(text, _midnight_of(log.path))
        chosen = log_window(lines, _seconds(request.since) if request.HasField("since") else 0,
                            _seconds(request.until) if request.HasField("until") else 0, request.limit)
        batches = [api_pb2.TaskLogsBatch(items=[_entry(ln) for ln in chosen])] if chosen else []
        await stream.send_message(api_pb2.AppFetchLogsResponse(batches=batches))

    async def AppGetLogs(self, stream: Stream[api_pb2.AppGetLogsRequest, api_pb2.TaskLogsBatch]) -> None:
        """Follow the app's log (`modal app logs NAME -f`): new lines as they are written, for
        the request's `timeout`; the client asks again from `last_entry_id` (a byte offset).
        A stopped app's log ends with `app_done`."""
        request = await stream.recv_message()
        assert request is not None
        self._known_app(request.app_id)
        log = self.manager.log(request.app_id)
        offset = int(request.last_entry_id) if request.last_entry_id.isdigit() else _recent_offset(log.read(0)[1])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(request.timeout, 0)
        while True:
            text, offset = log.read(offset)
            if text:
                now = time.time()
                items = [_entry(LogLine(line, now, line[9:15] == "[wisp]")) for line in text.splitlines()]
                await stream.send_message(api_pb2.TaskLogsBatch(entry_id=str(offset),
                                                                items=items))
            elif not self.manager.running_or_stopping(request.app_id):
                await stream.send_message(api_pb2.TaskLogsBatch(app_done=True))
                return
            if loop.time() >= deadline:
                return
            await asyncio.sleep(LOG_POLL)

    # -- secrets: `modal secret create/list/delete`, `modal.Secret.from_name` ----------------------
    async def SecretGetOrCreate(
            self, stream: Stream[api_pb2.SecretGetOrCreateRequest, api_pb2.SecretGetOrCreateResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        name = request.deployment_name
        store = self.manager.store
        action = secret_action(request.object_creation_type, store.secret(name) is not None)
        if action == "missing":
            raise GRPCError(Status.NOT_FOUND, f"Secret {name!r} not found on this wisp server. Create it with "
                                              f"`modal secret create {name} KEY=VALUE` or `wisp secret create`.")
        if action == "exists":
            raise GRPCError(Status.ALREADY_EXISTS, f"Secret {name!r} already exists; add --force to replace it.")
        if action == "unsupported":
            raise GRPCError(Status.UNIMPLEMENTED, "wisp keeps named secrets only; create it with "
                                                  "`modal secret create NAME KEY=VALUE`, then use Secret.from_name.")
        if action in ("create", "replace"):
            try:
                values = check_env(dict(request.env_dict), f"secret {name!r}")
                store.put_secret(check_name(name), values, replace=True)
            except ValueError as exc:
                raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        row = store.secret(name)
        assert row is not None
        await stream.send_message(api_pb2.SecretGetOrCreateResponse(secret_id=secret_id(name),
                                                                    metadata=_secret_metadata(row)))

    async def SecretList(self, stream: Stream[api_pb2.SecretListRequest, api_pb2.SecretListResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        page = request.pagination
        rows = sorted(self.manager.store.secrets(), key=lambda r: r.created_at, reverse=True)  # newest first
        if page.created_before:
            rows = [r for r in rows if r.created_at < page.created_before]
        rows = rows[:page.max_objects] if page.max_objects else rows
        items = [api_pb2.SecretListItem(label=r.name, created_at=r.created_at, environment_name="main",
                                        secret_id=secret_id(r.name), metadata=_secret_metadata(r)) for r in rows]
        await stream.send_message(api_pb2.SecretListResponse(items=items))

    async def SecretDelete(self, stream: Stream[api_pb2.SecretDeleteRequest, empty_pb2.Empty]) -> None:
        request = await stream.recv_message()
        assert request is not None
        name = secret_name(request.secret_id)
        if name is None or not self.manager.store.delete_secret(name):
            raise GRPCError(Status.NOT_FOUND, f"No secret {request.secret_id!r} on this wisp server.")
        await stream.send_message(empty_pb2.Empty())


def _secret_metadata(row: SecretRow) -> api_pb2.SecretMetadata:
    """Names, keys and dates: never values (as `wisp secret list`)."""
    return api_pb2.SecretMetadata(name=row.name, keys=sorted(row.values), environment_name="main",
                                  creation_info=api_pb2.CreationInfo(created_at=row.created_at, created_by="wisp"))


LOG_POLL = 0.25  # seconds between looks at a followed log: a log file has no change event to wait on
RECENT_BYTES = 64 * 1024  # what a new follower is shown of a log before its new lines


def _recent_offset(end: int) -> int:
    return max(end - RECENT_BYTES, 0)


def _entry(line: LogLine) -> api_pb2.TaskLogs:
    fd = api_pb2.FILE_DESCRIPTOR_INFO if line.system else api_pb2.FILE_DESCRIPTOR_STDOUT
    return api_pb2.TaskLogs(data=line.text + "\n", timestamp=line.timestamp, file_descriptor=fd)


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _midnight_of(path: os.PathLike[str]) -> float:
    """Local midnight of the day the file was last written (wisp's log lines carry local times)."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = time.time()
    day = time.localtime(mtime)
    return time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))

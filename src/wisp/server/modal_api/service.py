"""The RPCs of Modal's `ModalClient` service that wisp answers, over its own `AppManager`.

grpclib routes by the mapping that the generated `ModalClientBase.__mapping__` builds from the
handler attributes of the object it is given. `ModalService` defines the handlers wisp
implements; for any other name `__getattr__` gives a handler that answers UNIMPLEMENTED naming
the RPC, so the client's error says what is missing rather than failing in transport.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpclib.const
from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from modal_proto import api_pb2
from modal_proto.api_grpc import ModalClientBase

from ..._secret import check_env, check_name
from .translate import app_item, secret_action, secret_id, secret_name

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
        running = row is not None and row.mode == "deploy" and row.state == "running"
        await stream.send_message(api_pb2.AppGetByDeploymentNameResponse(
            app_id=row.id if running and row is not None else "",
            environment_name=request.environment_name or "main"))

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

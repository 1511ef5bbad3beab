"""The RPCs of Modal's `ModalClient` service that wisp answers, over its own `AppManager`.

grpclib routes by the mapping that the generated `ModalClientBase.__mapping__` builds from the
handler attributes of the object it is given. `ModalService` defines the handlers wisp
implements; for any other name `__getattr__` gives a handler that answers UNIMPLEMENTED naming
the RPC, so the client's error says what is missing rather than failing in transport.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpclib.const
from google.protobuf import empty_pb2, timestamp_pb2
from grpclib import GRPCError, Status
from modal_proto import api_pb2
from modal_proto.api_grpc import ModalClientBase

from ..._secret import check_env, check_name
from ..._urls import app_id_for, endpoint_urls, make_label
from ..apps import DeployError
from .calls import ModalCalls
from .drafts import DraftApp, Drafts, ImageLayer, MountFile, new_id, stable_id
from .specs import (
    Layer,
    Unsupported,
    app_layout,
    arguments_path,
    container_arguments,
    function_specs,
    image_spec,
    version_files,
)
from .translate import (
    APP_STATE_DEPLOYED,
    LogLine,
    app_item,
    app_state,
    dated_lines,
    log_filter,
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


class Servicer:
    """A handler object for grpclib from `ModalClientBase`'s mapping: the RPCs a subclass defines,
    and for any other name a handler that answers UNIMPLEMENTED naming it."""

    def __getattr__(self, name: str) -> Handler:
        if name[:1].isupper():  # an RPC of ModalClient that the subclass does not define
            return unimplemented(name)
        raise AttributeError(name)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        # The generated base only reads handler attributes off `self`; this object provides them.
        mapping: dict[str, grpclib.const.Handler] = ModalClientBase.__mapping__(self)  # type: ignore[arg-type]  # duck-typed servicer
        return mapping


class ModalService(Servicer):
    """What a `modal` client sees of a wisp server."""

    def __init__(self, manager: AppManager) -> None:
        self.manager = manager
        self.drafts = Drafts()
        self.calls = ModalCalls(manager.calls)
        self.functions: dict[str, tuple[str, str]] = {}  # function id -> (wisp app id, function name)
        self._keeper: asyncio.Future[None] | None = None

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
        if not await self.manager.stop(self.drafts.wisp_id(request.app_id)):
            raise GRPCError(Status.NOT_FOUND, f"No app {request.app_id!r} on this wisp server; `modal app list` "
                                              "shows the apps.")
        await stream.send_message(empty_pb2.Empty())

    # -- logs: `modal app logs NAME [-f]` ----------------------------------------------------------
    def _known_app(self, app_id: str) -> None:
        if self.manager.store.app(app_id) is None and app_id not in self.manager.logs:
            raise GRPCError(Status.NOT_FOUND, f"No app {app_id!r} on this wisp server; `modal app list` shows them.")

    def _function_named(self, app_id: str, function_id: str) -> str | None:
        """The function of the app a `--function fu-...` names (None: no filter)."""
        if not function_id:
            return None
        known = self.functions.get(function_id)
        if known is not None and known[0] == app_id:
            return str(known[1])
        row = self.manager.store.app(app_id)
        names = [str(f["name"]) for f in self.manager.store.version(app_id, row.version).spec["functions"]] if row else []
        for name in names:
            if stable_id("fu", f"{app_id}/{name}") == function_id:
                return name
        raise GRPCError(Status.NOT_FOUND, f"No function {function_id!r} in app {app_id!r}; `modal app list` and "
                                          "the deploy's output name its functions.")

    async def AppFetchLogs(self, stream: Stream[api_pb2.AppFetchLogsRequest, api_pb2.AppFetchLogsResponse]) -> None:
        """A time window of the app's log, the last `limit` lines of it (`modal app logs NAME`)."""
        request = await stream.recv_message()
        assert request is not None
        app_id = self.drafts.wisp_id(request.app_id)
        self._known_app(app_id)
        log = self.manager.log(app_id)
        text, _ = log.read(0)
        lines = dated_lines(text, _midnight_of(log.path))
        lines = log_filter(lines, request.search_text, self._function_named(app_id, request.function_id),
                           request.source)
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(request.timeout, 0)
        while self.drafts.unpublished(request.app_id):  # `modal serve` follows before it publishes
            if loop.time() >= deadline:
                return
            await asyncio.sleep(LOG_POLL)
        app_id = self.drafts.wisp_id(request.app_id)
        self._known_app(app_id)
        log = self.manager.log(app_id)
        function = self._function_named(app_id, request.function_id)
        if request.last_entry_id.isdigit():
            offset = int(request.last_entry_id)
        else:  # a `modal serve`/`run` from its own first line; `modal app logs -f` with recent lines
            offset = self.drafts.log_starts.get(request.app_id, _recent_offset(log.read(0)[1]))
        while True:
            text, offset = log.read(offset)
            if text:
                now = time.time()
                fresh = [LogLine(line, now, line[9:15] == "[wisp]") for line in text.splitlines()]
                items = [_entry(ln) for ln in log_filter(fresh, request.search_text, function)]
                await stream.send_message(api_pb2.TaskLogsBatch(entry_id=str(offset),
                                                                items=items))
            elif not self.manager.running_or_stopping(app_id):
                await stream.send_message(api_pb2.TaskLogsBatch(app_done=True))
                return
            if loop.time() >= deadline:
                return
            await asyncio.sleep(LOG_POLL)

    # -- deploy: the objects of an app, then AppPublish -------------------------------------------
    async def AppCreate(self, stream: Stream[api_pb2.AppCreateRequest, api_pb2.AppCreateResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        app_id = new_id("ap")
        draft = self.drafts.app(app_id)
        draft.description = request.description
        draft.mode = "deploy" if request.app_state == api_pb2.APP_STATE_INITIALIZING else "serve"
        await stream.send_message(api_pb2.AppCreateResponse(app_id=app_id, app_page_url="", app_logs_url=""))

    async def AppHeartbeat(self, stream: Stream[api_pb2.AppHeartbeatRequest, empty_pb2.Empty]) -> None:
        """The client is alive (every 15 s): an ephemeral app it runs is kept, see `_keep_served`."""
        request = await stream.recv_message()
        assert request is not None
        draft = self.drafts.apps.get(request.app_id)
        if draft is not None:
            draft.last_heartbeat = time.monotonic()
        await stream.send_message(empty_pb2.Empty())

    async def AppClientDisconnect(self, stream: Stream[api_pb2.AppClientDisconnectRequest, empty_pb2.Empty]) -> None:
        """The client is done: a deploy's objects are no longer needed; an ephemeral app stops."""
        request = await stream.recv_message()
        assert request is not None
        draft = self.drafts.apps.pop(request.app_id, None)
        if draft is not None and draft.mode == "serve" and draft.wisp_id:
            await self.manager.stop(draft.wisp_id, owner=draft.app_id)
        await stream.send_message(empty_pb2.Empty())

    async def AppGetLayout(self, stream: Stream[api_pb2.AppGetLayoutRequest, api_pb2.AppGetLayoutResponse]) -> None:
        """A deployed app that is deployed again: its objects are made afresh, so the layout is empty."""
        request = await stream.recv_message()
        assert request is not None
        draft = self.drafts.app(request.app_id)
        draft.functions.clear()  # what the script defines now is sent again; a removed function goes
        await stream.send_message(api_pb2.AppGetLayoutResponse(app_layout=api_pb2.AppLayout()))

    async def EnvironmentGetOrCreate(
            self, stream: Stream[api_pb2.EnvironmentGetOrCreateRequest, api_pb2.EnvironmentGetOrCreateResponse]) -> None:
        await stream.recv_message()
        settings = api_pb2.EnvironmentSettings(image_builder_version="2025.06", webhook_suffix="")
        await stream.send_message(api_pb2.EnvironmentGetOrCreateResponse(
            environment_id="en-main", metadata=api_pb2.EnvironmentMetadata(name="main", settings=settings)))

    async def ImageGetOrCreate(
            self, stream: Stream[api_pb2.ImageGetOrCreateRequest, api_pb2.ImageGetOrCreateResponse]) -> None:
        """Recorded, and answered as built: wisp builds the function's whole image chain at
        publish, where a failure fails the deploy with the step and its output."""
        request = await stream.recv_message()
        assert request is not None
        image = request.image
        image_id = new_id("im")
        self.drafts.images[image_id] = ImageLayer(list(image.dockerfile_commands),
                                                  [b.image_id for b in image.base_images],
                                                  {f.filename: f.data for f in image.context_files})
        done = api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)
        await stream.send_message(api_pb2.ImageGetOrCreateResponse(image_id=image_id, result=done))

    async def MountBatchedCheckExistence(
            self, stream: Stream[api_pb2.MountBatchedCheckExistenceRequest,
                                 api_pb2.MountBatchedCheckExistenceResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        missing = [h for h in request.sha256_hex_hashes if h not in self.drafts.blobs]
        await stream.send_message(api_pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing,
                                                                             checked_at=_now()))

    async def MountPutFile(self, stream: Stream[api_pb2.MountPutFileRequest, api_pb2.MountPutFileResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        if request.HasField("data"):
            limit = self.manager.bundle_limits.unpacked
            if len(request.data) > limit:
                raise GRPCError(Status.RESOURCE_EXHAUSTED, f"A mounted file is {len(request.data)} bytes, more than "
                                                           f"an app's files may unpack to on this server ({limit >> 20} "
                                                           "MiB, WISP_MAX_UNPACKED_MB); keep large data out of mounts.")
            if hashlib.sha256(request.data).hexdigest() != request.sha256_hex:
                raise GRPCError(Status.INVALID_ARGUMENT, "A mounted file's data does not match its SHA-256; run "
                                                         "`modal deploy` again.")
            self.drafts.blobs[request.sha256_hex] = request.data
        elif request.data_blob_id:
            raise GRPCError(Status.UNIMPLEMENTED, "wisp takes a mounted file's data inline only; files over the "
                                                  "client's blob threshold (large files) cannot be mounted yet.")
        await stream.send_message(api_pb2.MountPutFileResponse(exists=request.sha256_hex in self.drafts.blobs,
                                                               checked_at=_now()))

    async def MountGetOrCreate(
            self, stream: Stream[api_pb2.MountGetOrCreateRequest, api_pb2.MountGetOrCreateResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        mount_id = new_id("mo")
        self.drafts.mounts[mount_id] = [MountFile(f.filename, f.sha256_hex, f.mode) for f in request.files]
        await stream.send_message(api_pb2.MountGetOrCreateResponse(mount_id=mount_id,
                                                                   handle_metadata=api_pb2.MountHandleMetadata()))

    async def FunctionPrecreate(
            self, stream: Stream[api_pb2.FunctionPrecreateRequest, api_pb2.FunctionPrecreateResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        draft = self.drafts.app(request.app_id)
        function_id = draft.names.setdefault(request.function_name, self._function_id(draft, request.function_name))
        await stream.send_message(api_pb2.FunctionPrecreateResponse(
            function_id=function_id, handle_metadata=api_pb2.FunctionHandleMetadata(function_name=request.function_name)))

    async def FunctionCreate(self, stream: Stream[api_pb2.FunctionCreateRequest, api_pb2.FunctionCreateResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        fn = request.function if request.HasField("function") else request.function_data.ranked_functions[0].function
        draft = self.drafts.app(request.app_id)
        function_id = request.existing_function_id or draft.names.setdefault(
            fn.function_name, self._function_id(draft, fn.function_name))
        draft.functions[function_id] = fn
        if not request.HasField("function") and len(request.function_data.ranked_functions) > 1:  # gpu=[...]
            draft.ranked[function_id] = [r.function for r in sorted(request.function_data.ranked_functions,
                                                                    key=lambda r: r.rank)]
        web_url = self._web_url(draft, fn.function_name, fn.webhook_config) if fn.HasField("webhook_config") else ""
        methods = {name: api_pb2.FunctionHandleMetadata(
            function_name=method.function_name, is_method=True, use_method_name=name,
            web_url=self._web_url(draft, method.function_name, method.webhook_config))
            for name, method in fn.method_definitions.items()}
        data = api_pb2.FunctionData(module_name=fn.module_name, function_name=fn.function_name, web_url=web_url,
                                    webhook_config=fn.webhook_config,
                                    ranked_functions=[api_pb2.FunctionData.RankedFunction(rank=0, function=fn)])
        await stream.send_message(api_pb2.FunctionCreateResponse(
            function_id=function_id, function=fn, function_data=data,
            handle_metadata=api_pb2.FunctionHandleMetadata(function_name=fn.function_name, web_url=web_url,
                                                           definition_id=function_id, method_handle_metadata=methods)))

    def _web_url(self, draft: DraftApp, name: str, config: api_pb2.WebhookConfig) -> str:
        """The gateway URL (by host) a web function of this app gets, as wisp labels it."""
        if not config.type:
            return ""
        label = make_label(draft.description, name, label=config.requested_suffix or None, dev=draft.mode == "serve")
        return endpoint_urls(label, self.manager.gateway_port)[0]

    async def ClassCreate(self, stream: Stream[api_pb2.ClassCreateRequest, api_pb2.ClassCreateResponse]) -> None:
        """An @app.cls: its methods are in its class function's definition; nothing more to keep."""
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(api_pb2.ClassCreateResponse(class_id=request.existing_class_id or new_id("cs"),
                                                               handle_metadata=api_pb2.ClassHandleMetadata()))

    async def AppPublish(self, stream: Stream[api_pb2.AppPublishRequest, api_pb2.AppPublishResponse]) -> None:
        """The app's functions, images and mounts become one wisp deploy: built, proven ready and
        switched in as `wisp deploy` would, or failed with the reason while the old version serves."""
        request = await stream.recv_message()
        assert request is not None
        draft = self.drafts.apps.get(request.app_id)
        if draft is None or not draft.functions:
            raise GRPCError(Status.FAILED_PRECONDITION, "This app has no functions to publish on this wisp server; "
                                                        "run `modal deploy` again.")
        name = request.name or draft.description
        if request.app_state == api_pb2.APP_STATE_DEPLOYED:
            draft.mode = "deploy"
        owner = draft.app_id if draft.mode == "serve" else None  # the client's app holds a served one
        if draft.app_id not in self.drafts.published:  # its client follows the log from here on
            self.drafts.log_starts[draft.app_id] = self.manager.log(app_id_for(name, draft.mode, owner)).read(0)[1]
        try:
            spec, files = self._deploy_request(draft, name, request)
            result = await self.manager.deploy(spec, draft.mode, files, owner)
            draft.wisp_id = self.drafts.published[draft.app_id] = result["id"]
            if draft.mode == "serve":
                draft.last_heartbeat = time.monotonic()
                self._keep_served()
        except Unsupported as exc:
            raise GRPCError(Status.FAILED_PRECONDITION, str(exc)) from None
        except DeployError as exc:
            raise GRPCError(Status.FAILED_PRECONDITION, exc.message) from None
        await stream.send_message(api_pb2.AppPublishResponse(
            url=f"http://127.0.0.1:{self.manager.gateway_port}/", deployed_at=time.time()))

    def _function_id(self, draft: DraftApp, name: str) -> str:
        """The same id for a function of an app every time, remembered to find it again."""
        wisp_id = app_id_for(draft.description, draft.mode, draft.app_id if draft.mode == "serve" else None)
        function_id = stable_id("fu", f"{wisp_id}/{name}")
        self.functions[function_id] = (wisp_id, name)
        return function_id

    # -- calls: `.remote()`, `.map()`, `.spawn()`, `FunctionCall.from_id().get()` ------------------
    async def FunctionGet(self, stream: Stream[api_pb2.FunctionGetRequest, api_pb2.FunctionGetResponse]) -> None:
        """`modal.Function.from_name(app, name)`: a function of a deployed app."""
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self.function_get(request))

    def function_get(self, request: api_pb2.FunctionGetRequest) -> api_pb2.FunctionGetResponse:
        if self.manager._call_pool(request.app_name, request.object_tag) is None:
            raise GRPCError(Status.NOT_FOUND, f"No function {request.object_tag!r} that can be called in a deployed "
                                              f"app {request.app_name!r} on this wisp server.")
        function_id = stable_id("fu", f"{request.app_name}/{request.object_tag}")
        self.functions[function_id] = (request.app_name, request.object_tag)
        definition = api_pb2.Function(function_name=request.object_tag, app_name=request.app_name)
        data = api_pb2.FunctionData(function_name=request.object_tag,
                                    ranked_functions=[api_pb2.FunctionData.RankedFunction(rank=0, function=definition)])
        return api_pb2.FunctionGetResponse(function_id=function_id, function=data, handle_metadata=api_pb2.FunctionHandleMetadata(
            function_name=request.object_tag, definition_id=function_id))

    def _callable(self, function_id: str, app: str | None = None) -> tuple[str, str]:
        """The (wisp app, function) a function id names; with `app`, only a function of that app."""
        target = self.functions.get(function_id)
        if target is None or self.manager._call_pool(*target) is None or app not in (None, target[0]):
            raise GRPCError(Status.NOT_FOUND, f"Function {function_id} is not running on this wisp server (its app "
                                              "stopped, or it is a web endpoint: call it through its URL).")
        return target

    async def FunctionMap(self, stream: Stream[api_pb2.FunctionMapRequest, api_pb2.FunctionMapResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self.function_map(request))

    def function_map(self, request: api_pb2.FunctionMapRequest, app: str | None = None) -> api_pb2.FunctionMapResponse:
        app_id, function = self._callable(request.function_id, app)
        call_id = new_id("fc")
        self.calls.start(call_id, app_id, function)
        items = [self._put(call_id, item) for item in request.pipelined_inputs]
        return api_pb2.FunctionMapResponse(function_call_id=call_id, pipelined_inputs=items, function_call_jwt=call_id,
                                           sync_client_retries_enabled=False, max_inputs_outstanding=1000)

    def _put(self, call_id: str, item: api_pb2.FunctionPutInputsItem) -> api_pb2.FunctionPutInputsResponseItem:
        if item.input.args_blob_id:
            raise GRPCError(Status.UNIMPLEMENTED, "This input is larger than Modal sends inline (it went to blob "
                                                  "storage), which wisp does not take yet: pass smaller arguments.")
        input_id = self.calls.put(call_id, item.idx, item.input.args)
        return api_pb2.FunctionPutInputsResponseItem(idx=item.idx, input_id=input_id, input_jwt=input_id)

    async def FunctionPutInputs(
            self, stream: Stream[api_pb2.FunctionPutInputsRequest, api_pb2.FunctionPutInputsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self.function_put_inputs(request))

    def function_put_inputs(self, request: api_pb2.FunctionPutInputsRequest,
                            app: str | None = None) -> api_pb2.FunctionPutInputsResponse:
        self._known_call(request.function_call_id, app)
        return api_pb2.FunctionPutInputsResponse(inputs=[self._put(request.function_call_id, item)
                                                         for item in request.inputs])

    def _known_call(self, call_id: str, app: str | None = None) -> None:
        call = self.calls.calls.get(call_id)
        if call is None or app not in (None, call.app_id):
            raise GRPCError(Status.NOT_FOUND, f"No function call {call_id!r} on this wisp server (calls made through "
                                              "Modal's client are kept in the server's memory: a restart forgets them).")

    async def FunctionGetOutputs(
            self, stream: Stream[api_pb2.FunctionGetOutputsRequest, api_pb2.FunctionGetOutputsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(await self.function_get_outputs(request))

    async def function_get_outputs(self, request: api_pb2.FunctionGetOutputsRequest,
                                   app: str | None = None) -> api_pb2.FunctionGetOutputsResponse:
        self._known_call(request.function_call_id, app)
        after = int(request.last_entry_id) if request.last_entry_id.isdigit() else 0
        found, last = await self.calls.outputs(request.function_call_id, after, min(max(request.timeout, 0), 55.0))
        outputs = [api_pb2.FunctionGetOutputsItem(
            idx=idx, input_id=input_id, data_format=api_pb2.DATA_FORMAT_PICKLE,
            result=api_pb2.GenericResult(status=result.status,  # type: ignore[arg-type]  # a GenericStatus number
                                         exception=result.exception, traceback=result.traceback, data=result.data))
            for idx, input_id, result in found]
        return api_pb2.FunctionGetOutputsResponse(outputs=outputs, last_entry_id=str(last),
                                                  num_unfinished_inputs=self.calls.unfinished(request.function_call_id))

    async def FunctionCallFromId(
            self, stream: Stream[api_pb2.FunctionCallFromIdRequest, api_pb2.FunctionCallFromIdResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self.function_call_from_id(request))

    def function_call_from_id(self, request: api_pb2.FunctionCallFromIdRequest,
                              app: str | None = None) -> api_pb2.FunctionCallFromIdResponse:
        self._known_call(request.function_call_id, app)
        return api_pb2.FunctionCallFromIdResponse(function_call_id=request.function_call_id,
                                                  num_inputs=len(self.calls.calls[request.function_call_id].inputs))

    async def FunctionCallCancel(self, stream: Stream[api_pb2.FunctionCallCancelRequest, empty_pb2.Empty]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self.function_call_cancel(request)
        await stream.send_message(empty_pb2.Empty())

    def function_call_cancel(self, request: api_pb2.FunctionCallCancelRequest, app: str | None = None) -> None:
        self._known_call(request.function_call_id, app)
        self.calls.cancel(request.function_call_id)

    def _keep_served(self) -> None:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.ensure_future(self._keep_served_apps())

    async def _keep_served_apps(self) -> None:
        """wisp stops an ephemeral app whose heartbeats stop for 10 s; Modal's client beats every
        15 s. So the server beats for it while the client's own beats keep coming, and stops
        beating (wisp then stops the app) once they have not for MODAL_HEARTBEAT_TIMEOUT."""
        while True:
            served = [d for d in self.drafts.apps.values() if d.mode == "serve" and d.wisp_id]
            if not served:
                return
            now = time.monotonic()
            for draft in served:
                assert draft.wisp_id is not None
                alive = now - draft.last_heartbeat < MODAL_HEARTBEAT_TIMEOUT
                if not alive or not self.manager.heartbeat(draft.wisp_id, draft.app_id):
                    self.drafts.apps.pop(draft.app_id, None)  # silent, or stopped: no longer served
            await asyncio.sleep(KEEPER_INTERVAL)

    def _deploy_request(self, draft: DraftApp, name: str,
                        request: api_pb2.AppPublishRequest) -> tuple[dict[str, Any], bytes]:
        """wisp's deploy body for a draft: the AppSpec JSON and the version's files as a tarball,
        with each function's ContainerArguments for Modal's entrypoint."""
        functions, mount_ids, module = [], [], ""
        layout = app_layout(draft.functions, dict(request.function_ids) or {
            fn.function_name: fid for fid, fn in draft.functions.items()}, dict(request.class_ids))
        arguments = [(arguments_path(fn.function_name),
                      container_arguments(draft.app_id, fid, fn, layout).SerializeToString(), 0o644)
                     for fid, fn in draft.functions.items()]
        for fid, fn in draft.functions.items():
            functions += function_specs(fn, image_spec(self._chain(fn.image_id)), draft.ranked.get(fid, ()))
            mount_ids += [m for m in fn.mount_ids if m not in mount_ids]
            module = module or fn.module_name
        mounted = []
        for mount_id in mount_ids:
            for f in self.drafts.mounts.get(mount_id, []):
                data = self.drafts.blobs.get(f.sha256)
                if data is None:
                    raise Unsupported(f"The client did not send the contents of {f.filename}; run `modal deploy` again.")
                mounted.append((f.filename, data, f.mode))
        spec = {"name": name, "module": module, "stub_attr": "", "functions": functions}
        return spec, _tarball(version_files(mounted) + arguments)

    def _chain(self, image_id: str) -> list[Layer]:
        """The image's layers, the root first."""
        chain: list[Layer] = []
        while image_id:
            layer = self.drafts.images.get(image_id)
            if layer is None:
                raise Unsupported(f"The image {image_id} was not made on this wisp server; run `modal deploy` again.")
            if len(layer.base_ids) > 1:
                raise Unsupported("An image built from several base images cannot be built by wisp.")
            chain.append(Layer(tuple(layer.commands), tuple(layer.context_files.items())))
            image_id = layer.base_ids[0] if layer.base_ids else ""
        return chain[::-1]

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


MODAL_HEARTBEAT_TIMEOUT = 45.0  # three of the client's 15 s heartbeats missed: it is gone
KEEPER_INTERVAL = 2.0  # as often as `wisp serve` beats
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


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _tarball(files: list[tuple[str, bytes, int]]) -> bytes:
    """An app version's files as the gzipped tarball a wisp deploy takes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, data, mode in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), (mode & 0o777) or 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()

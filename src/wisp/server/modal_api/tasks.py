"""The server's side of a container that runs Modal's own entrypoint (`modal._container_entrypoint`).

Such a container asks the server for work over gRPC: it long-polls FunctionGetInputs, reads a
web request's messages with FunctionCallGetDataIn, writes the response's with
FunctionCallPutDataOut, and ends each input with FunctionPutOutputs. A `ModalTask` is one
container's queue of inputs and the channels of its calls; `TaskService` answers those RPCs for
that container only, on a Unix socket in the app's own folder (the container's
MODAL_SERVER_URL), so a container can reach nothing of the server but its own work, and calls to
its own app's functions (`.remote()`, `.map()`, `.spawn()` from inside a container, answered by
the client API's `ModalService` scoped to the app). Any other RPC answers UNIMPLEMENTED by name.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from modal_proto import api_pb2

from ..._urls import app_id_for
from . import asgi_wire
from .service import ModalService, Servicer

if TYPE_CHECKING:
    from grpclib.server import Stream

POLL_SECONDS = 50.0  # an empty FunctionGetInputs answer after this long; the container asks again
_numbers = itertools.count(1)


class TaskGone(Exception):
    """The container exited (or is being stopped) before a call's answer ended."""


@dataclass
class Call:
    """One input given to the container: its request channel in, its response channel out."""

    input_id: str
    function_call_id: str
    data_in: list[api_pb2.DataChunk] = field(default_factory=list)
    data_in_changed: asyncio.Event = field(default_factory=asyncio.Event)
    out: asyncio.Queue[asgi_wire.Message | None] = field(default_factory=asyncio.Queue)  # None: the output came
    result: asyncio.Future[api_pb2.GenericResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    _next_out: int = 1
    _early: dict[int, api_pb2.DataChunk] = field(default_factory=dict)  # data-out chunks ahead of their turn
    ended: bool = False

    def push_in(self, message: api_pb2.Asgi, data_format: int = api_pb2.DATA_FORMAT_ASGI) -> None:
        self.data_in.append(api_pb2.DataChunk(data_format=data_format,  # type: ignore[arg-type]  # a DataFormat number
                                              data=message.SerializeToString(), index=len(self.data_in) + 1))
        self._pulse()

    def _pulse(self) -> None:
        self.data_in_changed.set()
        self.data_in_changed = asyncio.Event()

    def put_out(self, chunk: api_pb2.DataChunk) -> None:
        """A response message, delivered in index order whatever order the chunks came in."""
        self._early[chunk.index] = chunk
        while (ready := self._early.pop(self._next_out, None)) is not None:
            self.out.put_nowait(asgi_wire.response_message(api_pb2.Asgi.FromString(ready.data)))
            self._next_out += 1

    def end(self, result: api_pb2.GenericResult | BaseException) -> None:
        if self.ended:
            return
        self.ended = True
        if isinstance(result, BaseException):
            self.result.set_exception(result)
        else:
            self.result.set_result(result)
        self.out.put_nowait(None)
        self._pulse()


class ModalTask:
    """One container's work: the inputs waiting for it and the calls it has taken."""

    def __init__(self, task_id: str, function_id: str, method_name: str | None, log: Callable[[str], None]) -> None:
        self.task_id = task_id
        self.function_id = function_id
        self.method_name = method_name or ""
        self.log = log
        self.polled = asyncio.Event()  # its first FunctionGetInputs: imported, entered, ready
        self.failure: str | None = None  # what TaskResult said (its import or enter hooks failed)
        self._inputs: asyncio.Queue[api_pb2.FunctionGetInputsItem] = asyncio.Queue()
        self._killed = asyncio.Event()
        self._calls: dict[str, Call] = {}  # by function call id
        self._by_input: dict[str, Call] = {}
        self._gone: str | None = None

    # -- the bridge's side ------------------------------------------------------------------------
    def submit(self, args: bytes, data_format: int) -> Call:
        if self._gone is not None:
            raise TaskGone(self._gone)
        number = next(_numbers)
        call = Call(input_id=f"in-{self.task_id}-{number}", function_call_id=f"fc-{self.task_id}-{number}")
        self._calls[call.function_call_id] = call
        self._by_input[call.input_id] = call
        self._inputs.put_nowait(api_pb2.FunctionGetInputsItem(
            input_id=call.input_id, function_call_id=call.function_call_id,
            function_call_invocation_type=api_pb2.FUNCTION_CALL_INVOCATION_TYPE_SYNC,
            input=api_pb2.FunctionInput(args=args, data_format=data_format,  # type: ignore[arg-type]  # a DataFormat number
                                        method_name=self.method_name)))
        return call

    def forget(self, call: Call) -> None:
        self._calls.pop(call.function_call_id, None)
        self._by_input.pop(call.input_id, None)

    def kill(self) -> None:
        """Stop handing out inputs: every poll from now on gets the kill switch, and the container
        finishes what it has, runs its exit hooks and exits."""
        self._killed.set()

    def close(self, reason: str) -> None:
        """The container is gone: every call still open ends with `reason`."""
        self._gone = reason
        self._killed.set()
        for call in list(self._calls.values()):
            call.end(TaskGone(reason))

    # -- the container's side ---------------------------------------------------------------------
    async def next_input(self) -> api_pb2.FunctionGetInputsItem | None:
        self.polled.set()
        if not self._inputs.empty():
            return self._inputs.get_nowait()
        if self._killed.is_set():
            return api_pb2.FunctionGetInputsItem(kill_switch=True)
        getting = asyncio.ensure_future(self._inputs.get())
        killed = asyncio.ensure_future(self._killed.wait())
        try:
            await asyncio.wait((getting, killed), timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
            if not getting.done():
                getting.cancel()
        if getting.done() and not getting.cancelled():
            return getting.result()
        return api_pb2.FunctionGetInputsItem(kill_switch=True) if self._killed.is_set() else None

    def call(self, function_call_id: str) -> Call | None:
        return self._calls.get(function_call_id)

    def output(self, item: api_pb2.FunctionPutOutputsItem) -> None:
        call = self._by_input.get(item.input_id)
        if call is not None:
            call.end(item.result)


class TaskService(Servicer):
    """The RPCs one container of Modal's entrypoint makes, answered for that container only."""

    def __init__(self, task: ModalTask, app_id: str, layout: api_pb2.AppLayout,
                 calls: ModalService | None = None) -> None:
        self.task = task
        self.app_id = app_id
        self.service = calls
        if calls is not None:  # the ids its app's functions were hydrated with, known after a restart too
            for name, function_id in layout.function_ids.items():
                calls.functions.setdefault(function_id, (app_id, name))

    def _calls(self) -> ModalService:
        if self.service is None:
            raise GRPCError(Status.UNIMPLEMENTED, "Calling functions from a container needs the server's Modal API, "
                                                  "which is off (started with --modal-port 0).")
        return self.service

    # -- calls to its app's functions --------------------------------------------------------------
    async def FunctionGet(self, stream: Stream[api_pb2.FunctionGetRequest, api_pb2.FunctionGetResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        if app_id_for(request.app_name, "deploy", None) != self.app_id:
            raise GRPCError(Status.PERMISSION_DENIED, f"A container calls the functions of its own app only, not of "
                                                      f"{request.app_name!r}.")
        await stream.send_message(self._calls().function_get(request))

    async def FunctionMap(self, stream: Stream[api_pb2.FunctionMapRequest, api_pb2.FunctionMapResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self._calls().function_map(request, self.app_id))

    async def FunctionPutInputs(
            self, stream: Stream[api_pb2.FunctionPutInputsRequest, api_pb2.FunctionPutInputsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self._calls().function_put_inputs(request, self.app_id))

    async def FunctionGetOutputs(
            self, stream: Stream[api_pb2.FunctionGetOutputsRequest, api_pb2.FunctionGetOutputsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(await self._calls().function_get_outputs(request, self.app_id))

    async def FunctionCallFromId(
            self, stream: Stream[api_pb2.FunctionCallFromIdRequest, api_pb2.FunctionCallFromIdResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self._calls().function_call_from_id(request, self.app_id))

    async def FunctionCallCancel(self, stream: Stream[api_pb2.FunctionCallCancelRequest, empty_pb2.Empty]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._calls().function_call_cancel(request, self.app_id)
        await stream.send_message(empty_pb2.Empty())

    # -- its own work ------------------------------------------------------------------------------

    async def ContainerHello(self, stream: Stream[empty_pb2.Empty, empty_pb2.Empty]) -> None:
        await stream.recv_message()
        await stream.send_message(empty_pb2.Empty())

    async def ContainerHeartbeat(
            self, stream: Stream[api_pb2.ContainerHeartbeatRequest, api_pb2.ContainerHeartbeatResponse]) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.ContainerHeartbeatResponse())

    async def FunctionGetDynamicConcurrency(
            self, stream: Stream[api_pb2.FunctionGetDynamicConcurrencyRequest,
                                 api_pb2.FunctionGetDynamicConcurrencyResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(api_pb2.FunctionGetDynamicConcurrencyResponse(concurrency=request.max_concurrency))

    async def FunctionGetInputs(
            self, stream: Stream[api_pb2.FunctionGetInputsRequest, api_pb2.FunctionGetInputsResponse]) -> None:
        await stream.recv_message()
        item = await self.task.next_input()
        await stream.send_message(api_pb2.FunctionGetInputsResponse(inputs=[item] if item is not None else []))

    async def FunctionCallGetDataIn(self, stream: Stream[api_pb2.FunctionCallGetDataRequest, api_pb2.DataChunk]) -> None:
        request = await stream.recv_message()
        assert request is not None
        call = self.task.call(request.function_call_id)
        last = request.last_index  # chunk indexes start at 1: data_in[last] is the next one
        while call is not None:
            changed = call.data_in_changed  # before reading: a chunk pushed meanwhile sets it
            while last < len(call.data_in):
                await stream.send_message(call.data_in[last])
                last += 1
            if call.ended:
                return
            await changed.wait()

    async def FunctionCallPutDataOut(self, stream: Stream[api_pb2.FunctionCallPutDataRequest, empty_pb2.Empty]) -> None:
        request = await stream.recv_message()
        assert request is not None
        call = self.task.call(request.function_call_id)
        for chunk in request.data_chunks:
            if call is None:
                break
            if chunk.data_blob_id:
                self.task.log("[wisp] a response message went to blob storage, which wisp does not take; "
                              "send the body in smaller pieces")
                call.end(api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE,
                                               exception="ExecutionError: a response message was too large"))
                break
            call.put_out(chunk)
        await stream.send_message(empty_pb2.Empty())

    async def FunctionPutOutputs(self, stream: Stream[api_pb2.FunctionPutOutputsRequest, empty_pb2.Empty]) -> None:
        request = await stream.recv_message()
        assert request is not None
        for item in request.outputs:
            self.task.output(item)
        await stream.send_message(empty_pb2.Empty())

    async def TaskResult(self, stream: Stream[api_pb2.TaskResultRequest, empty_pb2.Empty]) -> None:
        """The container failed before taking inputs (its import or enter hooks raised): it has
        printed the traceback, which the app's log has; keep the summary for the pool."""
        request = await stream.recv_message()
        assert request is not None
        self.task.failure = request.result.exception or "the container failed"
        await stream.send_message(empty_pb2.Empty())

    async def ContainerStop(self, stream: Stream[api_pb2.ContainerStopRequest, api_pb2.ContainerStopResponse]) -> None:
        await stream.recv_message()
        self.task.kill()
        await stream.send_message(api_pb2.ContainerStopResponse())

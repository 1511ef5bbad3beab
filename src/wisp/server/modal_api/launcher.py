"""Containers of apps deployed by Modal's client run Modal's own entrypoint, unmodified.

`python -m modal._container_entrypoint`, with what it expects: MODAL_CONTAINER_ARGUMENTS_PATH (a
`ContainerArguments` message: the function's definition as the client sent it, the app's
layout, this container's task id), MODAL_SERVER_URL (a Unix socket answering this container's
RPCs, `tasks.TaskService`) and MODAL_IS_REMOTE=1. The server listens on the container's own
socket path with `bridge.Bridge`, so the gateway, the pools and the call path reach it as they
reach any container. The pool learns that it is ready from its first FunctionGetInputs (after
its import and enter hooks), and it stops by being handed the kill switch: it finishes its
inputs, runs its exit hooks and exits.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from grpclib.server import Server
from modal_proto import api_pb2

from ..._protocol import Ready, encode
from ..isolation import AppUser
from ..runtime.base import ContainerProcess, Log
from ..runtime.gpus import NO_GPUS, Grant
from ..runtime.local import spawn
from ..runtime.slots import Slot, SlotSupply
from ..runtime.zygote import ZygoteError, ZygoteRuntime, sandbox_fields
from .bridge import Bridge, http_server_factory
from .service import ModalService
from .tasks import ModalTask, TaskService

ENTRYPOINT = "modal._container_entrypoint"


def _write(path: str, data: bytes) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "wb") as out:
        out.write(data)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ModalProcess:
    """A container of Modal's entrypoint, with the server-side listeners that serve it."""

    def __init__(self, process: ContainerProcess, task: ModalTask, servers: list[asyncio.AbstractServer | Server],
                 files: list[str]) -> None:
        self._process = process
        self.task = task
        self.pid = process.pid
        self.note: str | None = process.note
        self._servers = servers
        self._files = files

    async def lines(self) -> AsyncIterator[bytes]:
        """Its output, with a Ready message when it first asks for an input."""
        output = self._process.lines().__aiter__()
        polled: asyncio.Future[Any] | None = asyncio.ensure_future(self.task.polled.wait())
        line: asyncio.Future[bytes] = asyncio.ensure_future(output.__anext__())
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {line}
                if polled is not None:
                    waiting.add(polled)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if polled is not None and polled.done():
                    polled = None
                    yield encode(Ready())
                if line.done():
                    try:
                        yield line.result()
                    except StopAsyncIteration:
                        return
                    line = asyncio.ensure_future(output.__anext__())
        finally:
            for pending in (polled, line):
                if pending is not None and not pending.done():
                    pending.cancel()

    async def wait(self) -> int:
        code = await self._process.wait()
        self.task.close(f"exit code {code}" if not self.task.failure else self.task.failure)
        await self._close_servers()
        return code

    async def _close_servers(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for path in self._files:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def out_of_memory(self) -> str | None:
        return self._process.out_of_memory()

    async def stop(self, grace: float) -> None:
        """The kill switch first (it drains and runs its exit hooks), then signals after `grace`."""
        self.task.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._process.wait()), grace)
        await self._process.stop(0)


class ModalLauncher:
    """Starts containers of one function of a Modal app, each running Modal's entrypoint: forked
    from the image's zygote, which has imported what the entrypoint imports (the Modal client is
    most of a cold start), or else a fresh interpreter."""

    def __init__(self, python: str, arguments: Path, env: Mapping[str, str], cwd: Path, log: Log, *,
                 web: bool, method_name: str | None, app_id: str, user: AppUser | None = None,
                 zygotes: ZygoteRuntime | None = None, calls: Callable[[], ModalService | None] = lambda: None,
                 version_dir: Path | None = None, slots: SlotSupply | None = None) -> None:
        """`version_dir`: the app version's folder, which a sandboxed container sees (the
        arguments' folder's parent by default)."""
        self.python = python
        self.slots = slots  # its containers' limits (cgroup slots), as for wisp's own containers
        self.arguments = arguments
        self.env = dict(env)
        self.cwd = cwd
        self.log = log
        self.web = web
        self.method_name = method_name
        self.app_id = app_id
        self.calls = calls  # the client API's service, once it runs: containers call their app's functions through it
        self.user = user
        self.version_dir = version_dir or arguments.parent.parent
        self._template: api_pb2.ContainerArguments | None = None
        self.zygotes = zygotes
        self._preparing: asyncio.Future[Any] | None = None
        if zygotes is not None:
            zygotes.hold(python)

    def prepare(self) -> None:
        """Start the image's zygote ahead of the first container (its import of Modal's client
        would otherwise be part of a cold start)."""
        if self.slots is not None:
            self.slots.prepare()
        if self.zygotes is not None and self._preparing is None:
            self._preparing = asyncio.ensure_future(self.zygotes.image_zygote(self.python))

    async def ready(self) -> str | None:
        if self._preparing is not None:
            with contextlib.suppress(Exception):  # then each container says why it was not forked
                await asyncio.shield(self._preparing)
        return None

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> ModalProcess:
        if self._template is None:
            self._template = api_pb2.ContainerArguments.FromString(self.arguments.read_bytes())
        template = self._template
        task = ModalTask(f"ta-{Path(socket_path).stem}", template.function_id, self.method_name,
                         functools.partial(self.log.write))
        args = api_pb2.ContainerArguments()
        args.CopyFrom(template)
        args.task_id = task.task_id
        env = {**self.env, **gpus.env()}
        if args.function_def.webhook_config.type == api_pb2.WEBHOOK_TYPE_WEB_SERVER:
            # Two containers of it on one machine cannot share the declared port: each gets a free one.
            port = free_port()
            args.function_def.webhook_config.web_server_port = port
            env["PORT"] = str(port)
        args_path, rpc_path = socket_path + ".args", socket_path + ".rpc"
        _write(args_path, args.SerializeToString())
        rpc = Server([TaskService(task, self.app_id, args.app_layout, self.calls())])
        await rpc.start(path=rpc_path)
        os.chmod(rpc_path, 0o666)  # the container's uid connects; the app's own 0700 folder keeps others out
        loop = asyncio.get_running_loop()
        http = await loop.create_unix_server(http_server_factory(Bridge(task, self.web)), path=socket_path)
        env.update(MODAL_SERVER_URL=f"unix://{rpc_path}", MODAL_CONTAINER_ARGUMENTS_PATH=args_path,
                   MODAL_IS_REMOTE="1", MODAL_TASK_ID=task.task_id)
        try:
            process = await self._process(env)
        except BaseException:
            for server in (http, rpc):
                server.close()
            raise
        return ModalProcess(process, task, [http, rpc], [args_path, rpc_path])

    async def _process(self, env: dict[str, str]) -> ContainerProcess:
        note = None
        if self.zygotes is not None:
            request: dict[str, object] = {"module": ENTRYPOINT, "env": env, "cwd": str(self.cwd)}
            if self.user is not None:
                request.update(uid=self.user.uid, gid=self.user.gid)
            if self.zygotes.sandbox is not None:  # its own namespaces and root, with its socket's folder
                request["sandbox"] = sandbox_fields(self.zygotes.sandbox, str(self.version_dir),
                                                    env["MODAL_SERVER_URL"].removeprefix("unix://"))
            if self.slots is not None:
                request["tmp_size_mb"] = self.slots.limits.tmp_size_mb
            try:
                return await self.zygotes.fork_module(self.python, request, self._slot())
            except (ZygoteError, OSError) as exc:
                if self.zygotes.sandbox is not None:  # never outside the sandbox
                    raise ZygoteError(f"the image's zygote could not fork a sandboxed container: {exc}") from exc
                note = f"started as a fresh process: the image's zygote could not fork it ({exc})"
        return await spawn([self.python, "-m", ENTRYPOINT], env, self.cwd, self.user, note, self._slot())

    def _slot(self) -> Slot | None:
        return self.slots.take() if self.slots is not None else None

    async def close(self) -> None:
        if self.slots is not None:
            self.slots.close()
        if self.zygotes is not None:
            self.zygotes.release(self.python)
            self.zygotes = None

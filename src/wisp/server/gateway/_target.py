"""What the gateway needs from the rest of the server: a way to get a container for a label.

The gateway knows nothing about apps, pools or processes. The server keeps a live mapping of
label -> Target and the gateway asks the target for a container slot per request.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

Headers = list[tuple[bytes, bytes]]


class Lease(Protocol):
    """One request's slot on one container, held from dispatch until the response ends."""

    socket_path: str  # the container's uvicorn listens on this Unix socket

    def release(self, *, broken: bool = False, status: int | None = None) -> None:
        """Give the slot back. broken=True: the container failed this request (connect error,
        connection lost before the response ended). status: the HTTP status the client got,
        None if the client left before an answer."""

    def failure(self) -> str | None:
        """Why the container failed the request, when the server knows (it was killed for
        memory): the gateway's 502 says it instead of a bare "bad gateway"."""

    def long_lived(self) -> None:
        """The request may hold its slot for long (a WebSocket handshake, told as the lease
        arrives; a response streamed without a length, told at its head): no request should be
        handed to its container to wait behind it."""


class Target(Protocol):
    """One web function: hands out container slots, waiting for a cold start if needed. Every
    member the gateway uses is declared here, so a renamed one is a type error rather than a
    fast path silently lost (the gateway never looks members up by name)."""

    @property
    def timeout(self) -> float:
        """Seconds a call may go without starting its response; past it the gateway answers 504."""
        ...

    @property
    def strip_path_prefix(self) -> bool:
        """True: the container serves at "/" and knows nothing of a path prefix (a web_server):
        path-form requests (`/<label>/x`) reach it as `/x`, the prefix named in X-Forwarded-Prefix."""
        ...

    @property
    def call_param(self) -> bytes:
        """The query parameter the redirect chain names a detached call by: wisp's, or Modal's
        `__modal_function_call_id` for a function deployed by Modal's client."""
        ...

    @property
    def admit(self) -> Admit | None:
        """Sees the request's headers, as read, before anything else happens to it: a refusal is
        answered at once, with no container started and nothing queued. None: no check."""
        ...

    def try_acquire(self) -> Lease | None:
        """A free slot at once, or None when the request would have to `wait`."""
        ...

    def wait(self, deliver: Deliver) -> Waiting:
        """Queue for a slot: `deliver` is called once with the lease, or with the exception
        (TargetUnavailable: no container can be had) that ends the wait. Raises
        TargetUnavailable at once when waiting could not help."""
        ...


class Waiting(Protocol):
    """A queued request's place (`Target.wait`)."""

    def cancel(self) -> object:
        """Leave the queue (the client left). A lease delivered even so must be released."""


class TargetUnavailable(Exception):
    """The function cannot take the request; the gateway answers with `status` and a JSON body
    {"error": message}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


Admit = Callable[[Headers], "TargetUnavailable | None"]
Deliver = Callable[[Lease | BaseException], None]
CALL_PARAM = b"__wisp_call_id"  # names a detached call in the redirect chain's URLs
MODAL_CALL_PARAM = b"__modal_function_call_id"  # the same, as Modal names it


class PlainTarget:
    """Target's members that a target with nothing to add to them can share: the default
    timeout, no prefix stripping, no admission check, no fast path, and `wait` as a task around
    the subclass's `async acquire()`."""

    timeout: float = 300.0
    strip_path_prefix: bool = False
    call_param: bytes = CALL_PARAM
    admit: Admit | None = None

    def try_acquire(self) -> Lease | None:
        return None

    async def acquire(self) -> Lease:
        """Wait for a free slot; raise TargetUnavailable when none can be had. Subclasses define it."""
        raise NotImplementedError

    def wait(self, deliver: Deliver) -> Waiting:
        async def waiting() -> None:
            try:
                lease = await self.acquire()
            except Exception as exc:  # not CancelledError: a cancelled wait just ends
                deliver(exc)
                return
            deliver(lease)

        return asyncio.get_running_loop().create_task(waiting())

"""A WebSocket connection after its `101 Switching Protocols`: bytes piped both ways.

The gateway does not parse frames: once the container has accepted the handshake, the client's
and the container's transports get a `Pipe` each (text and binary frames, pings, pongs and
close codes all pass as they are, with flow control both ways). The container's slot is held
until either side closes, so the autoscaler counts an open WebSocket as a request in flight, and
neither the redirect window nor the idle sweep touches the connection meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..._runtime._pipe import Pipe
from ._target import Lease
from .upstream import UpstreamConnection

logger = logging.getLogger("wisp.gateway")


class TunnelClient(Protocol):
    """The client connection a tunnel takes over."""

    transport: asyncio.Transport
    write_paused: bool

    def connection_lost(self, exc: Exception | None) -> None: ...


class Tunnel:
    __slots__ = ("_client_end", "_upstream_end", "client", "lease", "upstream")

    def __init__(self, client: TunnelClient, upstream: UpstreamConnection, lease: Lease, early: bytes) -> None:
        self.client = client
        self.upstream = upstream
        self.lease: Lease | None = lease
        self._client_end = Pipe(self._lost)
        self._upstream_end = Pipe(self._lost)
        self._client_end.adopt(client.transport, write_paused=client.write_paused)
        self._upstream_end.adopt(upstream.transport)
        if early:  # frames the client sent right behind its handshake
            upstream.transport.write(early)
        self._client_end.link(self._upstream_end)

    def _lost(self, end: Pipe, exc: Exception | None) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                lease.release(status=101)
            except Exception:
                logger.exception("Lease.release() failed")
        # Each side's own bookkeeping, as if its original protocol had seen the loss.
        if end is self._client_end:
            self.client.connection_lost(exc)
        else:
            self.upstream.connection_lost(exc)

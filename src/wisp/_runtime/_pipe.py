"""A byte pipe between two connections, with flow control both ways.

Used by the container agent's web_server proxy (Unix socket <-> the user's TCP port) and by the
gateway once a WebSocket upgrade has been answered (client <-> container). Each connection gets
a `Pipe` as its protocol; what one end receives, the other end's transport sends. A full write
buffer on one side pauses reading on the other, so a pipe never holds more than two transport
buffers. EOF is passed on as a half-close; the pipe closes when both directions are done or
either connection is lost.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable


class Pipe(asyncio.Protocol):
    __slots__ = ("_closed", "_early", "_eof", "_on_lost", "_peer_full", "_reading", "peer", "transport")

    def __init__(self, on_lost: Callable[[Pipe, Exception | None], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self._early: list[bytes] = []  # received before the other end existed
        self._eof = False  # this end's peer sent EOF
        self._closed = False
        self._on_lost = on_lost
        self._reading = True
        self._peer_full = False  # this end's transport asked to stop writing to it

    # -- wiring --------------------------------------------------------------------------------
    def adopt(self, transport: asyncio.Transport, *, write_paused: bool = False) -> None:
        """Take over a transport that already exists (set_protocol), as if newly connected."""
        self.transport = transport
        self._peer_full = write_paused
        self._reading = transport.is_reading()
        transport.set_protocol(self)

    def link(self, peer: Pipe) -> None:
        """Join two ends; bytes either end received meanwhile go through now."""
        self.peer, peer.peer = peer, self
        for end in (self, peer):
            early, end._early = end._early, []
            for data in early:
                end._forward(data)
            if end.transport is not None and end.peer is not None and end.peer._peer_full:
                end._pause()
            elif end.transport is not None:
                end._resume()

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio passes a BaseTransport; a stream socket's is a Transport

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._early.append(data)
            self._pause()  # one read ahead at most until the other end exists
            return
        self._forward(data)

    def eof_received(self) -> bool:
        self._eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer._closed:
            return False
        if peer._eof or not peer.transport.can_write_eof():
            peer.close()
            return False  # both directions are done: let this transport close too
        peer.transport.write_eof()
        return True  # half-closed: the other direction goes on

    def pause_writing(self) -> None:
        self._peer_full = True
        if self.peer is not None:
            self.peer._pause()

    def resume_writing(self) -> None:
        self._peer_full = False
        if self.peer is not None:
            self.peer._resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        peer = self.peer
        if peer is not None:
            peer.close()  # after what is buffered toward it has been sent
        if self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None
            on_lost(self, exc)

    # -- helpers -------------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed and self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _forward(self, data: bytes) -> None:
        peer = self.peer
        assert peer is not None
        transport = peer.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _pause(self) -> None:
        if self._reading and self.transport is not None and not self._closed:
            self._reading = False
            self.transport.pause_reading()

    def _resume(self) -> None:
        if not self._reading and self.transport is not None and not self._closed:
            self._reading = True
            self.transport.resume_reading()

"""How calls between functions travel: pure encoding, shared by callers and containers.

A call's input is `cloudpickle((args, kwargs))`, sent as one HTTP body. An answer is a sequence
of *frames*, each a 4-byte big-endian length, one byte naming the kind, and the pickled payload.
The kind is readable without unpickling anything: the server only needs to know whether a
spawned call succeeded, and must never unpickle what a container sent (a crafted pickle runs
code in whoever loads it). Only the caller, which is the app's own code, loads payloads.

- `("ok", value)`: the function returned `value` (the only frame of a plain call);
- `("item", value)`: a generator yielded `value` (any number, streamed as they come);
- `("done", None)`: the generator finished;
- `("error", RemoteFailure)`: the function raised; the caller raises it again. On the wire its
  summary and traceback are clear JSON and only the exception itself is pickled, so the server
  can report a failure (to Modal's client, say) without loading anything.

No I/O here: the container's invoke app and the caller's client both feed bytes in and out.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle

CONTENT_TYPE = "application/x-wisp-call"
KIND_HEADER = "x-wisp-call"  # "remote" or "gen": what the caller wants back
TOKEN_HEADER = "x-wisp-call-token"  # the app's call token; the gateway checks it before queueing
_LENGTH = struct.Struct(">I")


def encode_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    data: bytes = cloudpickle.dumps((tuple(args), dict(kwargs)))
    return data


def decode_input(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args, kwargs = cloudpickle.loads(data)
    return tuple(args), dict(kwargs)


@dataclass
class RemoteFailure:
    """An exception raised in a container, with what the caller needs to raise it again.

    `exception` is None when the exception itself could not be pickled (a socket in its args,
    say); the caller then raises a RemoteError carrying `summary`.
    """

    exception: BaseException | None
    summary: str  # `TypeName: message`
    traceback: str  # the remote traceback, formatted


KINDS = ("ok", "item", "done", "error")  # a frame's kind byte is its index here


def frame(kind: str, payload: Any) -> bytes:
    return pickled_frame(kind, cloudpickle.dumps(payload))


def pickled_frame(kind: str, body: bytes) -> bytes:
    """A frame of a payload pickled already (by a Modal container, say)."""
    return _LENGTH.pack(len(body) + 1) + bytes((KINDS.index(kind),)) + body


@dataclass(frozen=True)
class RawFrame:
    """A frame as the server may see it: its kind, the pickled payload (for an error, the
    pickled exception, or b"" when it would not pickle) and, for an error, its text."""

    kind: str
    data: bytes
    summary: str = ""
    traceback: str = ""


def failure_frame(exc: BaseException, traceback_text: str) -> bytes:
    try:
        pickled: bytes = cloudpickle.dumps(exc)
    except Exception:  # an exception that will not pickle still reaches the caller as text
        pickled = b""
    return pickled_failure_frame(f"{type(exc).__name__}: {exc}", traceback_text, pickled)


def pickled_failure_frame(summary: str, traceback_text: str, pickled: bytes) -> bytes:
    """An error frame: its text, and the exception as pickled already (b"": text only)."""
    meta = json.dumps({"summary": summary, "traceback": traceback_text}).encode()
    return pickled_frame("error", _LENGTH.pack(len(meta)) + meta + pickled)


def _raw(kind: str, body: bytes) -> RawFrame:
    if kind != "error":
        return RawFrame(kind, body)
    (size,) = _LENGTH.unpack_from(body)
    meta = json.loads(body[_LENGTH.size:_LENGTH.size + size])
    return RawFrame(kind, body[_LENGTH.size + size:], str(meta["summary"]), str(meta["traceback"]))


def _loaded(raw: RawFrame) -> tuple[str, Any]:
    """The caller's view of a frame: its payload unpickled."""
    if raw.kind != "error":
        return raw.kind, cloudpickle.loads(raw.data)
    exception = cloudpickle.loads(raw.data) if raw.data else None
    return raw.kind, RemoteFailure(exception, raw.summary, raw.traceback)


class FrameReader:
    """Turns answer bytes, in chunks of any size, into (kind, payload) frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[str, Any]]:
        for raw in self.feed_raw(data):
            yield _loaded(raw)

    def feed_raw(self, data: bytes) -> Iterator[RawFrame]:
        """Frames with their payloads still pickled: nothing is unpickled."""
        self._buffer += data
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                return
            if size < 1 or self._buffer[_LENGTH.size] >= len(KINDS):
                raise ValueError(f"not an answer frame (size {size}, kind byte {self._buffer[_LENGTH.size:][:1]!r})")
            code, body = self._buffer[_LENGTH.size], bytes(self._buffer[_LENGTH.size + 1:end])
            del self._buffer[:end]
            try:
                yield _raw(KINDS[code], body)
            except (struct.error, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"a malformed {KINDS[code]} frame ({exc})") from None

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame: non-zero at the end of an answer means it was cut."""
        return len(self._buffer)


def decode_frames(data: bytes) -> list[tuple[str, Any]]:
    """Every frame of a whole answer, payloads unpickled: for the caller only."""
    return [_loaded(raw) for raw in raw_frames(data)]


def raw_frames(data: bytes) -> list[RawFrame]:
    """Every frame of a whole answer, payloads left pickled: what the server may look at."""
    reader = FrameReader()
    frames = list(reader.feed_raw(data))
    if reader.pending:
        raise ValueError(f"the answer ends inside a frame ({reader.pending} bytes left over)")
    return frames

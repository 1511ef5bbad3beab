"""The one protocol between the server and what runs containers (the container agent and the
zygotes), imported by both sides: versioned messages, one JSON line each.

- `Start`: what a container (or a function's zygote) runs: the app version's folder, the
  script's module, its Stub's name, the function, and, for a container, its socket and the
  device nodes of the GPUs it holds (`gpu_devices`). It travels
  as the agent's one argument (`python -m wisp._runtime --start <json>`) or inside a fork
  request to a zygote, never as an argv convention to slice.
- On a container's output, a protocol line starts with `PREFIX`; any other line is the app's
  own output, which the server logs (`Log`). `Ready` (with the enter hooks' time) says it
  serves; `Stopping` that it was told to stop and drains; a function's zygote answers
  `ZygoteReady` or `Unforkable`.
- `Exited` carries a forked container's exit status on its status pipe.

Lines travel over pipes today; being self-delimiting text they can cross a machine boundary
unchanged. Stdlib only: containers import this before anything else.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Union

VERSION = 1
PREFIX = b"\x00wisp "  # a NUL cannot start a line an app prints by accident
# The name (/proc/PID/comm) of a container a function's zygote forked ahead, until it has its
# request: the server's memory bound counts it with its zygote.
STANDBY_NAME = "wisp-standby"


class ProtocolError(ValueError):
    """A line that claims to be a message but is not one this side understands."""


@dataclass(frozen=True)
class Start:
    kind: ClassVar[str] = "start"
    directory: str  # the app version's folder (/root)
    module: str  # the user's script, imported by this module name
    stub: str  # the module-level name of its Stub; "": the one it defines
    function: str
    socket: str | None = None  # where the container listens (a Unix socket, or tcp:HOST:PORT); None for a zygote
    timeout_keep_alive: int = 75
    # The /dev/nvidiaN nodes of the GPUs this container holds ("/dev/nvidia0", ...); empty without
    # gpu=. Its CUDA_VISIBLE_DEVICES names the same devices. A sandbox binds only these (and the
    # shared /dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidia-uvm-tools, /dev/nvidia-modeset).
    gpu_devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpu_devices", tuple(self.gpu_devices))  # a list once through JSON

    def for_container(self, socket: str, gpu_devices: tuple[str, ...] = ()) -> Start:
        return replace(self, socket=socket, gpu_devices=gpu_devices)

    def to_arg(self) -> str:
        return json.dumps(_fields(self))

    @classmethod
    def from_arg(cls, text: str) -> Start:
        message = _message(json.loads(text) if text.startswith("{") else None, text)
        if not isinstance(message, Start):
            raise ProtocolError(f"expected start parameters, got {text[:80]!r}")
        return message


@dataclass(frozen=True)
class Ready:
    kind: ClassVar[str] = "ready"
    enter_seconds: float | None = None  # the enter hooks' time, for /metrics


@dataclass(frozen=True)
class Stopping:
    kind: ClassVar[str] = "stopping"


@dataclass(frozen=True)
class ZygoteReady:
    kind: ClassVar[str] = "zygote-ready"


@dataclass(frozen=True)
class Unforkable:
    kind: ClassVar[str] = "unforkable"
    reason: str


@dataclass(frozen=True)
class Exited:
    kind: ClassVar[str] = "exited"
    code: int


@dataclass(frozen=True)
class Log:
    """A line of the app's own output (not a protocol line; never encoded)."""

    kind: ClassVar[str] = "log"
    text: str


TCP = "tcp:"  # a container's address on another machine: tcp:HOST:PORT (HOST of IPv6 in brackets)


def tcp_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a `tcp:HOST:PORT` address; None for a Unix socket's path."""
    if not address.startswith(TCP):
        return None
    host, sep, port = address[len(TCP):].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProtocolError(f"a malformed container address {address!r}: expected tcp:HOST:PORT")
    return host.strip("[]"), int(port)


def tcp(host: str, port: int) -> str:
    return f"{TCP}[{host}]:{port}" if ":" in host else f"{TCP}{host}:{port}"


Message = Union[Start, Ready, Stopping, ZygoteReady, Unforkable, Exited]  # noqa: UP007 (a runtime alias)
_KINDS: dict[str, type[Any]] = {cls.kind: cls for cls in (Start, Ready, Stopping, ZygoteReady, Unforkable, Exited)}


def _fields(message: Message) -> dict[str, Any]:
    return {"v": VERSION, "kind": message.kind, **asdict(message)}


def encode(message: Message) -> bytes:
    return PREFIX + json.dumps(_fields(message)).encode() + b"\n"


def encode_line(message: Message) -> str:
    """`encode()` as text, for print()."""
    return encode(message).decode().rstrip("\n")


def decode(line: bytes) -> Message | Log:
    """One line of a container's or a zygote's output."""
    if not line.startswith(PREFIX):
        return Log(line.decode(errors="replace").rstrip("\n"))
    try:
        data = json.loads(line[len(PREFIX):])
    except ValueError:
        raise ProtocolError(f"a malformed protocol line: {line[:80]!r}") from None
    return _message(data, line)


def _message(data: Any, raw: object) -> Message:
    if not isinstance(data, dict):
        raise ProtocolError(f"not a protocol message: {raw!r:.80}")
    if data.get("v") != VERSION:
        raise ProtocolError(f"protocol version {data.get('v')!r} where {VERSION} was expected: the server and "
                            "the container run different wisp versions; restart the server (`wisp server stop`).")
    cls = _KINDS.get(data.get("kind", ""))
    if cls is None:
        raise ProtocolError(f"an unknown message kind {data.get('kind')!r}")
    names = {f.name for f in fields(cls)}
    try:
        message: Message = cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ProtocolError(f"a {cls.kind} message without its fields ({exc})") from None
    return message


__all__ = ["PREFIX", "STANDBY_NAME", "TCP", "VERSION", "Exited", "Log", "Message", "ProtocolError", "Ready", "Start", "Stopping",
           "Unforkable", "ZygoteReady", "decode", "encode", "encode_line", "tcp", "tcp_address"]

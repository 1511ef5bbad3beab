"""The container protocol (wisp/_protocol.py, issue 12 point 4): every message round-trips, the
version and the shape are checked, and anything else on a container's output is its own log."""
from __future__ import annotations

import json

import pytest

from wisp import _protocol as p


@pytest.mark.parametrize("message", [
    p.Start("/root", "app", "stub", "f"),
    p.Start("/apps/x/v3", "mod", "", "Model.predict", socket="/tmp/s/c1.sock", timeout_keep_alive=5),
    p.Ready(), p.Ready(0.25), p.Stopping(), p.ZygoteReady(), p.Unforkable("threads: grpc-poller"), p.Exited(-9),
    p.Exited(0),
])
def test_every_message_round_trips(message: p.Message) -> None:
    line = p.encode(message)
    assert line.startswith(p.PREFIX) and line.endswith(b"\n") and line.count(b"\n") == 1
    assert p.decode(line) == message
    assert p.encode_line(message) + "\n" == line.decode()


def test_start_travels_as_one_argument() -> None:
    start = p.Start("/root", "app", "stub", "f").for_container("/tmp/c.sock")
    assert start.socket == "/tmp/c.sock"
    assert p.Start.from_arg(start.to_arg()) == start
    with pytest.raises(p.ProtocolError, match="expected start parameters"):
        p.Start.from_arg(json.dumps({"v": p.VERSION, "kind": "ready", "enter_seconds": None}))


@pytest.mark.parametrize(("line", "text"), [
    (b"hello from the app\n", "hello from the app"),
    (b"", ""),
    (b"wisp {\"v\": 1}\n", 'wisp {"v": 1}'),  # no NUL: the app's own text that looks alike
    (b"\xff\xfe bytes\n", "\ufffd\ufffd bytes"),
])
def test_other_lines_are_the_apps_own_output(line: bytes, text: str) -> None:
    assert p.decode(line) == p.Log(text)


@pytest.mark.parametrize(("line", "problem"), [
    (p.PREFIX + b"{not json\n", "malformed"),
    (p.PREFIX + b'["a list"]\n', "not a protocol message"),
    (p.PREFIX + b'{"v": 2, "kind": "ready"}\n', "protocol version 2 where 1 was expected"),
    (p.PREFIX + b'{"kind": "ready"}\n', "protocol version None"),
    (p.PREFIX + b'{"v": 1, "kind": "teleport"}\n', "unknown message kind 'teleport'"),
    (p.PREFIX + b'{"v": 1, "kind": "exited"}\n', "exited message without its fields"),
])
def test_what_claims_to_be_a_message_and_is_not_is_refused(line: bytes, problem: str) -> None:
    with pytest.raises(p.ProtocolError, match=problem):
        p.decode(line)


def test_a_version_mismatch_says_what_to_do() -> None:
    with pytest.raises(p.ProtocolError, match="restart the server"):
        p.decode(p.PREFIX + b'{"v": 99, "kind": "ready"}\n')


@pytest.mark.parametrize(("address", "parsed"), [
    ("/tmp/wisp-x/c1.sock", None),
    ("tcp:127.0.0.1:8000", ("127.0.0.1", 8000)),
    ("tcp:node-a.internal:65535", ("node-a.internal", 65535)),
    ("tcp:[::1]:9", ("::1", 9)),
])
def test_a_container_address_is_a_socket_path_or_tcp(address: str, parsed: tuple[str, int] | None) -> None:
    assert p.tcp_address(address) == parsed
    if parsed is not None:
        assert p.tcp(*parsed) == address


@pytest.mark.parametrize("address", ["tcp:127.0.0.1", "tcp::80", "tcp:host:0", "tcp:host:70000", "tcp:host:http"])
def test_a_malformed_tcp_address_is_refused(address: str) -> None:
    with pytest.raises(p.ProtocolError, match="tcp:HOST:PORT"):
        p.tcp_address(address)

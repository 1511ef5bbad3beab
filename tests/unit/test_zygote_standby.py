"""Which request a container forked ahead takes (`Zygote.hand_over`), over a real socket pair: it
must have said it is ready (its sandbox entered), and its sandbox must be the request's; one made
for other settings survives one such request, not two in a row."""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from wisp._runtime import sandbox as sb
from wisp._runtime.zygote import READY, Standby, Zygote

SETTINGS = {"without": [], "hidden": [], "version_dir": "/srv/apps/a/v1", "socket_dir": "/run/a"}
SMALL = {"sandbox": SETTINGS, "tmp_size_mb": 512, "env": {}}
BIG = {"sandbox": SETTINGS, "tmp_size_mb": 64, "env": {}}


@pytest.fixture(autouse=True)
def sandboxed_zygote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sb, "_plan", [])
    monkeypatch.setattr(sb, "_pid_namespaces", True)


@pytest.fixture
def parked() -> Iterator[tuple[Zygote, socket.socket]]:
    """A zygote holding a standby made for SMALL; the other end is the standby's."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote = Zygote.__new__(Zygote)  # no listener or signal handlers: only hand_over is tried
    zygote.standby = Standby(4242, ours, True, sb.ahead_key(SMALL))
    yield zygote, theirs
    theirs.close()
    if zygote.standby is not None:
        zygote.standby.sock.close()


def _give(zygote: Zygote, request: dict[str, object], pid_namespace: bool = True) -> int | None:
    read, write = os.pipe()
    try:
        return zygote.hand_over(dict(request), write, pid_namespace)
    finally:
        os.close(read)
        os.close(write)


def _received(theirs: socket.socket) -> bytes | None:
    theirs.setblocking(False)  # recv_fds ignores its flags before Python 3.12
    try:
        data, fds, _, _ = socket.recv_fds(theirs, 1 << 16, 4)
    except BlockingIOError:
        return None
    finally:
        theirs.setblocking(True)
    for fd in fds:
        os.close(fd)
    return data


def test_a_ready_standby_takes_a_request_alike(parked: tuple[Zygote, socket.socket]) -> None:
    zygote, theirs = parked
    theirs.send(READY)
    assert _give(zygote, SMALL) == 4242
    assert zygote.standby is None
    assert b'"tmp_size_mb": 512' in (_received(theirs) or b"")


def test_one_still_entering_its_sandbox_is_kept_and_takes_the_next(parked: tuple[Zygote, socket.socket]) -> None:
    zygote, theirs = parked
    assert _give(zygote, SMALL) is None  # not ready: this request gets a fork of its own
    assert zygote.standby is not None and _received(theirs) is None
    theirs.send(READY)
    assert _give(zygote, SMALL) == 4242


def test_one_that_died_parked_is_dropped(parked: tuple[Zygote, socket.socket]) -> None:
    zygote, theirs = parked
    theirs.close()
    assert _give(zygote, SMALL) is None
    assert zygote.standby is None


@pytest.mark.parametrize(("requests", "taken", "kept"), [
    ([BIG], [None], True),  # another function's /tmp: forked for it, the standby kept
    ([BIG, SMALL], [None, 4242], False),  # alternating traffic: the one it was made for still gets it
    ([BIG, BIG], [None, None], False),  # the traffic moved: dropped, the next is made for BIG
])
def test_one_made_for_other_settings_survives_one_such_request(
        parked: tuple[Zygote, socket.socket], requests: list[dict[str, object]], taken: list[int | None],
        kept: bool) -> None:
    zygote, theirs = parked
    theirs.send(READY)
    assert [_give(zygote, request) for request in requests] == taken
    assert (zygote.standby is not None) == kept


def test_one_made_for_the_other_kind_of_fork_is_dropped(parked: tuple[Zygote, socket.socket]) -> None:
    zygote, theirs = parked
    theirs.send(READY)
    assert _give(zygote, SMALL, pid_namespace=False) is None  # no pid namespace asked: not this one
    assert zygote.standby is None

"""The Exchange's phases (issue 12, point 3): one explicit state instead of loose booleans, with
its steps written down in TRANSITIONS, and a detached request's stored form."""
from __future__ import annotations

import pytest

from wisp.server.gateway.exchange import _ENDED, _HEAD_SENT, TRANSITIONS, Exchange, Phase
from wisp.server.gateway.request import Request
from wisp.server.gateway.upstream import UpstreamPool

P = Phase


@pytest.mark.parametrize(("start", "end", "allowed"), [
    (P.ACQUIRING, P.CONNECTING, True),  # a lease, no idle connection to its container
    (P.ACQUIRING, P.FORWARDING, True),  # a lease and an idle connection: sent at once
    (P.ACQUIRING, P.CLOSED, True),  # the client left, or no container could be had
    (P.ACQUIRING, P.RESPONDING, False),
    (P.CONNECTING, P.FORWARDING, True),
    (P.CONNECTING, P.CLOSED, True),  # the connection failed: 502
    (P.FORWARDING, P.RESPONDING, True),
    (P.FORWARDING, P.SWITCHING, True),  # 101 to a WebSocket handshake
    (P.FORWARDING, P.CONNECTING, True),  # a reused connection was dead before reading: replay
    (P.FORWARDING, P.CLOSED, True),  # lost before a head: 502
    (P.FORWARDING, P.ANSWERED, False),  # an answer needs a head first
    (P.RESPONDING, P.ANSWERED, True),  # finished, or cut mid-body
    (P.RESPONDING, P.CLOSED, False),  # a head went out: the end says so
    (P.RESPONDING, P.CONNECTING, False),  # never replayed once answering
    (P.SWITCHING, P.ANSWERED, True),  # a tunnel now, or cut
    (P.ANSWERED, P.CLOSED, False),
    (P.CLOSED, P.FORWARDING, False),
])
def test_transitions(start: Phase, end: Phase, allowed: bool) -> None:
    assert (end in TRANSITIONS[start]) is allowed


def test_every_phase_is_written_down_and_the_ends_are_final() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert all(not TRANSITIONS[p] for p in _ENDED)
    assert {P.RESPONDING, P.SWITCHING, P.ANSWERED} == _HEAD_SENT


class _Client:
    write_paused = False

    def hold_body(self, hold: bool) -> None:
        pass

    def respond(self, status: int, payload: object, headers: object = None) -> None:
        self.responded = status


def test_a_step_not_written_down_is_refused_naming_the_request() -> None:
    req = Request()
    req.request_id = b"r-1"
    exchange = Exchange(_Client(), UpstreamPool(), req, b"", 0.0)  # type: ignore[arg-type]  # a minimal client
    assert exchange.phase is P.ACQUIRING and not exchange.done and not exchange.head_sent
    with pytest.raises(RuntimeError, match="exchange r-1: acquiring -> responding"):
        exchange._to(P.RESPONDING)
    exchange.abort()
    assert exchange.phase is P.CLOSED and exchange.done and not exchange.head_sent


def test_a_detached_requests_stored_form_keeps_what_framing_needs_only() -> None:
    req = Request()
    req.method, req.url, req.request_id, req.chunked, req.body_size = b"POST", b"/x?y=1", b"id-7", True, 12
    req.http11, req.keep_alive, req.headers = False, False, [(b"cookie", b"secret")]
    stored = req.stored()
    assert (stored.method, stored.url, stored.request_id, stored.chunked, stored.body_size) == (
        b"POST", b"/x?y=1", b"id-7", True, 12)
    assert stored.complete and stored.http11 and stored.keep_alive and stored.headers == []

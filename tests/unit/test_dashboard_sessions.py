"""The dashboard's one-time login codes and sessions (pure; the clock is passed in)."""
from __future__ import annotations

from wisp.server.dashboard.sessions import LOGIN_TTL, SESSION_TTL, Sessions


def test_a_code_is_good_once_and_only_within_its_minute() -> None:
    s = Sessions()
    code = s.new_code(100.0)
    session = s.redeem(code, 100.0 + LOGIN_TTL - 1)
    assert session is not None and s.valid(session, 101.0)
    assert s.redeem(code, 102.0) is None  # spent
    late = s.new_code(200.0)
    assert s.redeem(late, 200.0 + LOGIN_TTL) is None  # expired


def test_unknown_and_empty_sessions_are_not_valid() -> None:
    s = Sessions()
    assert not s.valid(None, 0.0) and not s.valid("", 0.0) and not s.valid("guessed", 0.0)
    assert s.redeem("guessed", 0.0) is None


def test_a_session_in_use_lives_on_and_an_idle_one_ends() -> None:
    s = Sessions()
    session = s.redeem(s.new_code(0.0), 0.0)
    assert session is not None
    assert s.valid(session, SESSION_TTL - 1)  # used: its expiry moves on
    assert s.valid(session, 2 * SESSION_TTL - 2)
    assert not s.valid(session, 4 * SESSION_TTL)  # idle past its lifetime


def test_codes_and_sessions_are_distinct_random_strings() -> None:
    s = Sessions()
    codes = {s.new_code(0.0) for _ in range(50)}
    assert len(codes) == 50 and all(len(c) >= 32 for c in codes)

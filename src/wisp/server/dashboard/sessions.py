"""One-time login codes and the sessions they become: pure, with the clock passed in."""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

LOGIN_TTL = 60.0  # seconds a login link may wait to be opened
SESSION_TTL = 12 * 3600.0  # seconds a session lasts without being used


@dataclass
class Sessions:
    codes: dict[str, float] = field(default_factory=dict)  # one-time code -> expiry
    sessions: dict[str, float] = field(default_factory=dict)  # session id -> expiry

    def new_code(self, now: float) -> str:
        self._expire(now)
        code = secrets.token_urlsafe(24)
        self.codes[code] = now + LOGIN_TTL
        return code

    def redeem(self, code: str, now: float) -> str | None:
        """A session id for a valid code, which is then spent; None for anything else."""
        self._expire(now)
        for known in list(self.codes):
            if hmac.compare_digest(known.encode(), code.encode()):
                del self.codes[known]
                session = secrets.token_urlsafe(32)
                self.sessions[session] = now + SESSION_TTL
                return session
        return None

    def valid(self, session: str | None, now: float) -> bool:
        if not session:
            return False
        expiry = self.sessions.get(session)
        if expiry is None or expiry <= now:
            self.sessions.pop(session, None)
            return False
        self.sessions[session] = now + SESSION_TTL  # in use: it lives on
        return True

    def _expire(self, now: float) -> None:
        self.codes = {c: t for c, t in self.codes.items() if t > now}
        self.sessions = {s: t for s, t in self.sessions.items() if t > now}

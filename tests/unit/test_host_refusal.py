"""The gateway listens off loopback only with an explicit --insecure (issue 15, point 6)."""
from __future__ import annotations

import pytest

from wisp.server.main import host_refusal


@pytest.mark.parametrize(("host", "insecure", "refused"), [
    ("127.0.0.1", False, False),
    ("127.0.0.2", False, False),
    ("::1", False, False),
    ("localhost", False, False),
    ("0.0.0.0", False, True),
    ("::", False, True),
    ("192.168.1.10", False, True),
    ("example.org", False, True),  # a name: it may resolve anywhere
    ("0.0.0.0", True, False),
])
def test_host_refusal(host: str, insecure: bool, refused: bool) -> None:
    reason = host_refusal(host, insecure)
    assert (reason is not None) == refused
    if reason is not None:
        assert "--insecure" in reason and "TLS" in reason

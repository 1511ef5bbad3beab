"""A server asked to listen off loopback without --insecure refuses to start, saying why and
what to do (issue 15, point 6). Only the refusal is exercised: tests stay on loopback."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Wisp, free_port, open_for_containers

pytestmark = pytest.mark.e2e


def test_a_non_loopback_host_without_insecure_does_not_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_for_containers(home)
    wisp = Wisp(home, free_port())
    refused = wisp.run("server", "start", "--host", "0.0.0.0", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert "--insecure" in said and "TLS" in said, said
    status = wisp.run("server", "status", check=False)
    assert status.returncode != 0 and "No wisp server is running" in status.stdout, status

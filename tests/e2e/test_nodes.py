"""`wisp node list|drain` on a one-machine server: one node, this machine, and nothing to drain."""
from __future__ import annotations

import pytest

from .conftest import Wisp

pytestmark = pytest.mark.e2e


def test_a_local_server_lists_this_machine_as_its_one_node(wisp: Wisp) -> None:
    out = wisp.run("node", "list").stdout
    assert out.splitlines()[0].split()[:3] == ["NAME", "STATE", "ADDRESS"]
    assert out.splitlines()[1].split()[:3] == ["local", "up", "127.0.0.1"], out


def test_draining_a_node_of_a_local_server_says_there_is_none(wisp: Wisp) -> None:
    refused = wisp.run("node", "drain", "local", check=False)
    assert refused.returncode == 1
    assert "no node to drain" in refused.stdout + refused.stderr

"""Two root servers on one machine, each with a store of its own, never run two apps as one uid
(uid_claims.py): before, both gave their first app the range's first uid, and each app could read
the other's code and signal its processes."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from e2e.conftest import Wisp, get, start_wisp

APPS = Path(__file__).parent / "apps"


@pytest.mark.skipif(os.geteuid() != 0, reason="per-app uids need a server running as root")
def test_two_servers_with_stores_of_their_own_give_their_apps_different_uids(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("uid-claims")
    claims = root / "claims"  # this test's own: the machine's folder is shared with every root test
    shutil.copy(APPS / "victim.py", root / "victim.py")
    servers: list[Wisp] = []
    try:
        for name in ("one", "two"):
            servers.append(start_wisp(root / name, {"WISP_UID_CLAIMS": str(claims)}))
            log = (servers[-1].home / "server.log").read_text()
            if "share the server's uid" in log:  # wisp lies where other users cannot read it: no app uids
                pytest.skip(next(line for line in log.splitlines() if "share the server's uid" in line))
            servers[-1].run("deploy", str(root / "victim.py"))  # the same app name on both
            assert get(servers[-1].url("iso-victim--alive")).json() == {"alive": "victim-code-7731"}
        uids = [(wisp.home / "apps" / "iso-victim" / "v1").stat().st_uid for wisp in servers]
        assert uids[0] != uids[1] and 0 not in uids
        held = {path.name: path.read_text() for path in claims.iterdir() if path.name.isdigit()}
        assert held == {str(uid): f"sqlite:{(wisp.home / 'state.db').resolve()}" for uid, wisp in zip(uids, servers)}

        servers[1].run("server", "stop")  # a restart keeps its app's uid and its claim
        servers[1].run("server", "start")
        assert get(servers[1].url("iso-victim--alive")).status_code == 200
        assert (servers[1].home / "apps" / "iso-victim" / "v1").stat().st_uid == uids[1]
        assert "holds too" not in (servers[1].home / "server.log").read_text()
    finally:
        for wisp in servers:
            wisp.run("server", "stop", check=False)

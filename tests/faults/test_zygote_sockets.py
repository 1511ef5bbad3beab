"""A zygote's socket is reachable by every process of its uid (an app's own containers reach
their function's zygote): a peer that hangs up at once, or sends garbage, must not end the
zygote, because the containers forked from it die with it. A probe doing just that once killed a
function zygote and every container of it (a 502 for the request in flight)."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from e2e.conftest import get, host_pid, start_wisp

pytestmark = pytest.mark.faults
APPS = Path(__file__).parent / "apps"


def zygote_sockets(home: Path, server_pid: int) -> list[str]:
    """The zygote sockets of one server (named `z<n>-<server pid>.sock`), in the folders its run
    record names: files, since a sandboxed function zygote listens in a network namespace of its
    own, out of this one's /proc/net/unix."""
    folders = json.loads((home / "run" / "run.json").read_text()).get("folders", [])
    return sorted(str(path) for folder in folders for path in Path(folder).rglob(f"z*-{server_pid}.sock")
                  if path.is_socket())


def poke(path: str, payload: bytes | None) -> None:
    """Send `payload`; one that names a sandbox goes with the two descriptors a request carries."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    pipe = os.pipe()
    try:
        sock.connect(path)
        if payload is not None and b'"sandbox"' in payload:
            socket.send_fds(sock, [payload], list(pipe))
        elif payload is not None:
            sock.sendall(payload)
    finally:
        sock.close()
        for fd in pipe:
            os.close(fd)


@pytest.mark.parametrize("payload", [None, b"\x00garbage", b'["a list"]', b'{"not": "fds"}',
                                     b'{"sandbox": 5}', b'{"sandbox": {"without": 5}}'],
                         ids=["hang-up", "garbage", "not-an-object", "no-fds", "sandbox-not-an-object",
                              "sandbox-without-not-a-list"])
def test_a_bad_peer_on_a_zygote_socket_ends_no_zygote_and_no_container(tmp_path: Path, payload: bytes | None) -> None:
    wisp = start_wisp(tmp_path / "home")
    try:
        shutil.copy(APPS / "procs_app.py", tmp_path / "procs_app.py")
        wisp.run("deploy", str(tmp_path / "procs_app.py"))
        before = {get(wisp.url("procs--hello")).json()["pid"] for _ in range(4)}  # the warm pool's containers
        server_pid = json.loads((wisp.home / "server.json").read_text())["pid"]
        sockets = zygote_sockets(wisp.home, server_pid)
        assert len(sockets) >= 2, sockets  # the image's zygote and the function's
        for path in sockets:
            poke(path, payload)
        assert get(wisp.url("procs--hello")).status_code == 200
        assert all(host_pid(pid) is not None for pid in before), before  # their zygote lives on
        assert get(wisp.url("procs--spawner")).status_code == 200  # and still forks new ones
    finally:
        wisp.run("server", "stop", check=False)

"""Opt-in egress of sandboxed containers (`network=`, issue 15 point 1), against a real root
server under `--runtime sandbox`.

The test makes its own outside world: a network namespace joined to the machine by a veth, with
HTTP servers on OUTSIDE:8080 and OUTSIDE:8081, and a TCP listener on the machine's own end of
that veth. apps/egress_app.py has four webhooks that connect where they are told: `opened`
(network=True), `fresh` (the same with fork=False), `closed` (no network=) and `listed`
(network=["OUTSIDE:8080"]). Skipped, with the reason, where the sandbox or nftables are missing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.conftest import Wisp, get, start_wisp, wait_until
from wisp._runtime import sandbox

APPS = Path(__file__).parent / "apps"
HOST_PORT = 8099  # the listener on the machine's own address, which no container may reach
VETH = re.compile(r"wsp[0-9a-f]{8}")
BURST = 4


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "veths, namespaces and nftables rules need root"
    if shutil.which("nft") is None or shutil.which("ip") is None:
        return "nft or ip is not installed (scripts/install installs nftables)"
    missing = sandbox.probe()
    return f"the kernel refuses: {missing}" if missing else None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Outside:
    namespace: str
    machine: str  # the machine's address on the veth to the outside world
    outside: str  # the outside world's address, where its HTTP servers listen


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outside]:
    """A network namespace with two HTTP servers, 10.213.N.2:8080 and :8081, reachable from the
    machine (10.213.N.1); N from this process's pid, so parallel runs do not collide."""
    n = os.getpid() % 200 + 20
    name, here, there = f"egt{os.getpid()}", f"egt{os.getpid()}h", f"egt{os.getpid()}n"
    world = Outside(name, f"10.213.{n}.1", f"10.213.{n}.2")
    servers: list[subprocess.Popen[bytes]] = []
    folder = tmp_path_factory.mktemp("outside")
    (folder / "index.html").write_text("outside\n")
    try:
        _ip("netns", "add", name)
        _ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", name)
        _ip("addr", "add", f"{world.machine}/24", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", name, "addr", "add", f"{world.outside}/24", "dev", there)
        _ip("-n", name, "link", "set", there, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        for port in (8080, 8081):
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-m", "http.server", str(port), "--bind", world.outside],
                cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in (8080, 8081):
            wait_until(lambda port=port: _reachable(world.outside, port), 30, message=f"the outside server on {port}")  # type: ignore[misc]
        yield world
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=30)
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def host_listener(world: Outside) -> Iterator[socket.socket]:
    """A TCP listener on the machine's own address (the veth to the outside world)."""
    listener = socket.create_server((world.machine, HOST_PORT))
    listener.settimeout(0.1)
    try:
        yield listener
    finally:
        listener.close()


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=30)
    return gone.pid


@pytest.fixture(scope="module")
def stale() -> Iterator[str]:
    """The table a server killed with its containers running would leave behind."""
    name = f"wisp_{_dead_pid()}"
    subprocess.run(["nft", "add", "table", "inet", name], check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def egress(world: Outside, stale: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    root = tmp_path_factory.mktemp("egress")
    wisp = start_wisp(root / "home", {"WISP_RUNTIME": "sandbox"})
    try:
        shutil.copy(APPS / "egress_app.py", root / "egress_app.py")
        wisp.env["EGRESS_ALLOWED"] = f"{world.outside}:8080"  # read by the script when it is deployed
        wisp.run("deploy", str(root / "egress_app.py"))
        yield wisp
    finally:
        wisp.run("server", "stop", check=False)


def _probe(wisp: Wisp, function: str, host: str, port: int) -> str:
    answer = get(wisp.url(f"egress--{function}"), params={"host": host, "port": port})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"])


def _table(wisp: Wisp) -> str:
    done = subprocess.run(["nft", "list", "table", "inet", f"wisp_{wisp.server_pid()}"], capture_output=True,
                          text=True, timeout=30)
    return done.stdout if done.returncode == 0 else ""


def _links() -> set[str]:
    listing = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30, check=True).stdout
    return set(VETH.findall(listing))


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30).stdout


def test_network_true_reaches_the_outside_world(egress: Wisp, world: Outside, stale: str) -> None:
    assert f"table inet {stale}\n" in _tables()
    assert _probe(egress, "opened", world.outside, 8080) == "HTTP/1.0 200 OK"
    assert f"table inet {stale}\n" not in _tables()  # a gone server's table, removed when the first was made
    assert _probe(egress, "opened", world.outside, 8081) == "HTTP/1.0 200 OK"
    assert _probe(egress, "fresh", world.outside, 8080) == "HTTP/1.0 200 OK"  # fork=False: another path


def test_without_network_nothing_leaves_the_container(egress: Wisp, world: Outside) -> None:
    assert _probe(egress, "closed", world.outside, 8080) == "ENETUNREACH"  # no route at all


def test_an_allow_list_reaches_what_it_lists_and_nothing_else(egress: Wisp, world: Outside) -> None:
    assert _probe(egress, "listed", world.outside, 8080) == "HTTP/1.0 200 OK"
    assert _probe(egress, "listed", world.outside, 8081) == "EHOSTUNREACH"  # refused by its policy


def test_the_machine_itself_stays_out_of_reach(egress: Wisp, world: Outside, host_listener: socket.socket) -> None:
    # The listener is reachable over the network (from the outside world) ...
    reached = subprocess.run(["ip", "netns", "exec", world.namespace, sys.executable, "-c",
                              f"import socket; socket.create_connection(({world.machine!r}, {HOST_PORT}), timeout=5)"],
                             capture_output=True, text=True, timeout=30)
    assert reached.returncode == 0, reached.stderr
    # ... but not from a container with network=True: not by this address, nor by its gateway's.
    assert _probe(egress, "opened", world.machine, HOST_PORT) == "EHOSTUNREACH"
    assert _probe(egress, "opened", "10.239.0.1", HOST_PORT) == "EHOSTUNREACH"
    # The control API and the gateway listen on the machine's loopback; the container's is its own.
    admin_port = int(json.loads((egress.home / "server.json").read_text())["admin_port"])
    assert _probe(egress, "opened", "127.0.0.1", admin_port) == "ECONNREFUSED"
    assert _probe(egress, "opened", "127.0.0.1", egress.port) == "ECONNREFUSED"


def test_a_stopped_containers_network_goes_with_it(egress: Wisp, world: Outside) -> None:
    # Overlapping requests: a container each, their networks made at once.
    with ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(lambda _: get(egress.url("egress--opened"), params={
            "host": world.outside, "port": 8080, "hold": 1.5}), range(BURST)))
    assert [a.json()["result"] for a in answers] == ["HTTP/1.0 200 OK"] * BURST
    ours = set(VETH.findall(_table(egress)))
    assert ours and ours <= _links()  # the running containers' veths (as many as the pool started), in its policy
    # Idle for 2 s, the containers stop: their veths leave the links and the policy.
    wait_until(lambda: not VETH.findall(_table(egress)) and not ours & _links(), 60,
               message="the stopped containers' veths to go")
    table = f"wisp_{egress.server_pid()}"
    egress.run("server", "stop")
    assert f"table inet {table}\n" not in _tables()


def test_the_zygote_runtime_says_its_containers_are_not_isolated(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home", {"WISP_RUNTIME": "zygote"})
    try:
        shutil.copy(APPS / "egress_app.py", tmp_path / "egress_app.py")
        deployed = wisp.run("deploy", str(tmp_path / "egress_app.py")).stdout
        assert deployed.count("not network-isolated") == 3  # opened, listed and fresh; not closed
        assert "opened asks for network=True, but containers of the 'zygote' runtime are not" in deployed
        logs = wait_until(lambda: (out := wisp.run("app", "logs", "egress").stdout).count("not network-isolated") and out,
                          30, message="the app's logs to say it")
        assert "opened asks for network=True" in logs and "listed asks for network=[" in logs
        assert "closed asks" not in logs
    finally:
        wisp.run("server", "stop", check=False)

"""`network=` (issue 15, point 1) as pure logic: the grammar of its values, the address plan,
the nftables rules a policy becomes, and what the server does with a function that asks for it
under a runtime that cannot give it. The rules at work: tests/faults/test_egress.py."""
from __future__ import annotations

import ctypes
import io
import ipaddress
import json
import re
from typing import Any

import pytest

import wisp
from wisp._image_steps import ImageSpec
from wisp._network import Allowed, canonical, parse_entry
from wisp._runtime.sandbox import has_default_route
from wisp._session.progress import BuildProgress
from wisp._spec import AppSpec, FunctionSpec
from wisp.server.apps import DeployError, _check_network
from wisp.server.runtime import egress_plan as plan
from wisp.server.runtime.egress import NETWORK_ENV, Egress, EgressLauncher, with_network
from wisp.server.runtime.netns import RTF_GATEWAY, RTF_HOST, RTF_UP, RtEntry, ifreq_address, route

POOL = ipaddress.IPv4Network("10.239.0.0/16")


@pytest.mark.parametrize(("value", "stored"), [
    (False, False),
    (None, False),
    (True, True),
    (["pypi.org:443"], ("pypi.org:443",)),
    (["PyPI.org.", "pypi.org"], ("pypi.org",)),  # case and a trailing dot are the same name; repeats go
    (("10.0.0.0/8", ":5432", "203.0.113.7"), ("10.0.0.0/8", "203.0.113.7", ":5432")),
    (["203.0.113.7/32:80-89"], ("203.0.113.7:80-89",)),
    (["db.internal:5432-5432"], ("db.internal:5432",)),
    ([" 0.0.0.0/0 "], ("0.0.0.0/0",)),
])
def test_network_values_are_stored_in_one_canonical_form(value: Any, stored: Any) -> None:
    assert canonical(value) == stored


@pytest.mark.parametrize(("entry", "allowed"), [
    ("pypi.org", Allowed(host="pypi.org")),
    ("pypi.org:443", Allowed(host="pypi.org", ports=(443, 443))),
    ("10.0.0.0/8:5432", Allowed(network=ipaddress.IPv4Network("10.0.0.0/8"), ports=(5432, 5432))),
    (":8000-8100", Allowed(ports=(8000, 8100))),
    ("203.0.113.7", Allowed(network=ipaddress.IPv4Network("203.0.113.7/32"))),
])
def test_an_entry_names_a_host_or_network_and_ports(entry: str, allowed: Allowed) -> None:
    assert parse_entry(entry) == allowed


@pytest.mark.parametrize(("value", "error", "says"), [
    ("pypi.org", TypeError, r"got the string 'pypi.org'\. Write network=\['pypi.org'\]"),
    (3, TypeError, r"takes True, False or a list of entries, got 3\. Write for example network=\["),
    ([], ValueError, r"`network=\[\]` allows nothing\. Write network=False"),
    ([443], ValueError, r"entries are strings, got 443"),
    ([""], ValueError, r"an entry is empty"),
    (["*.pypi.org"], ValueError, r"wildcards are not supported; list each host name"),
    (["localhost:8000"], ValueError, r"machine itself is never reachable"),
    (["127.0.0.1"], ValueError, r"loopback is the container's own"),
    (["::1"], ValueError, r"containers have IPv4 only"),
    (["[2001:db8::1]:443"], ValueError, r"containers have IPv4 only"),
    (["10.0.0.1/8"], ValueError, r"bits set past its prefix /8: write 10\.0\.0\.0/8"),
    (["10.0.0.300"], ValueError, r"not an IPv4 address or network"),
    (["pypi.org:0"], ValueError, r"must be from 1 to 65535"),
    (["pypi.org:9-1"], ValueError, r"the low one first"),
    (["pypi.org:https"], ValueError, r"must be a number from 1 to 65535 or a range"),
    ([":"], ValueError, r"must be a number"),
    (["127.0.0.0/8"], ValueError, r"loopback is the container's own"),
    (["http://10.1.2.3:8080/x"], ValueError, r"is a URL; write its host and port, as in '10.1.2.3:8080'"),
    (["bad_name!"], ValueError, r"is not a host name, an IPv4 address or a network"),
])
def test_bad_values_say_what_is_wrong_and_what_to_write(value: Any, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says) as caught:
        canonical(value, "@stub.function")
    assert str(caught.value).startswith("@stub.function: ")
    if error is ValueError and value:  # an entry's problem, then the forms it may take
        assert "for example network=[" in str(caught.value)


def test_the_decorator_records_network_and_the_spec_survives_json() -> None:
    stub = wisp.Stub("net")

    @stub.function(network=["pypi.org:443", "10.0.0.0/8"])
    def f() -> None: ...

    recorded = stub.spec(default_name="net", module="m", stub_attr="stub").function("f")
    assert recorded.network == ("10.0.0.0/8", "pypi.org:443")
    assert FunctionSpec.from_dict(json.loads(json.dumps(recorded.to_dict()))) == recorded
    assert FunctionSpec.from_dict({**recorded.to_dict(), "network": True}).network is True
    assert FunctionSpec.from_dict({k: v for k, v in recorded.to_dict().items() if k != "network"}).network is False
    with pytest.raises(ValueError, match=r"@stub\.webhook: `network`: 'https://pypi.org' is a URL; write its host and port, as in 'pypi.org:443'"):
        stub.webhook(network=["https://pypi.org"])(lambda: None)


def test_the_server_refuses_a_bad_value_another_client_sent() -> None:
    good = FunctionSpec("good", ImageSpec(), network=("pypi.org:443",))
    bad = FunctionSpec("bad", ImageSpec(), network=("pypi.org:99999",))
    _check_network(AppSpec("net", "m", "stub", (good,)))
    with pytest.raises(DeployError, match=r"function `bad`: `network`: the ports in 'pypi.org:99999'"):
        _check_network(AppSpec("net", "m", "stub", (good, bad)))


@pytest.mark.parametrize(("n", "address"), [(0, "10.239.0.2"), (1, "10.239.0.3"), (65532, "10.239.255.254"),
                                            (65533, "10.239.0.2")])
def test_container_addresses_skip_the_network_gateway_and_broadcast(n: int, address: str) -> None:
    assert str(plan.gateway(POOL)) == "10.239.0.1"
    assert str(plan.container_address(POOL, n)) == address


@pytest.mark.parametrize(("text", "result"), [
    ("10.239.0.0/16", "10.239.0.0/16"),
    ("192.168.77.0/29", "192.168.77.0/29"),
    ("10.239.0.1/16", r"not an IPv4 network"),
    ("8.8.8.0/24", r"private IPv4 network of /29 or larger"),
    ("10.0.0.0/30", r"private IPv4 network of /29 or larger"),
])
def test_the_pool_is_a_private_network(text: str, result: str) -> None:
    if "/" in result and "network" not in result:
        assert str(plan.parse_pool(text)) == result
    else:
        with pytest.raises(ValueError, match=result):
            plan.parse_pool(text)


def test_veth_names_fit_the_kernels_limit_and_match_the_rules_wildcard() -> None:
    for token in (0, 1, 0xFFFFFFFF, 1 << 40):
        name = plan.veth_name(token)
        assert len(name) <= 15 and re.fullmatch(r"wsp[0-9a-f]{8}", name)


@pytest.mark.parametrize(("value", "resolved", "rules"), [
    (True, {}, ["accept"]),
    (("10.0.0.0/8",), {}, ["ip daddr 10.0.0.0/8 accept", plan.REFUSE]),
    ((":5432",), {}, ["tcp dport 5432 accept", "udp dport 5432 accept", plan.REFUSE]),
    (("203.0.113.7:80-89",), {}, ["ip daddr 203.0.113.7/32 tcp dport 80-89 accept",
                                  "ip daddr 203.0.113.7/32 udp dport 80-89 accept", plan.REFUSE]),
    # A host name: the name servers may be asked, and its addresses as they resolve now.
    (("pypi.org:443",), {"pypi.org": ["151.101.64.223", "151.101.0.223"]},
     ["ip daddr 10.255.255.53 udp dport 53 accept", "ip daddr 10.255.255.53 tcp dport 53 accept",
      "ip daddr { 151.101.0.223, 151.101.64.223 } tcp dport 443 accept",
      "ip daddr { 151.101.0.223, 151.101.64.223 } udp dport 443 accept", plan.REFUSE]),
    # A name that did not resolve allows nothing (but asking the name servers).
    (("gone.example",), {}, ["ip daddr 10.255.255.53 udp dport 53 accept",
                             "ip daddr 10.255.255.53 tcp dport 53 accept", plan.REFUSE]),
])
def test_a_policy_accepts_what_it_lists_and_refuses_the_rest(value: Any, resolved: dict[str, list[str]],
                                                             rules: list[str]) -> None:
    assert plan.policy_rules(value, resolved, ["10.255.255.53"]) == rules


def test_equal_policies_share_a_chain_and_different_ones_do_not() -> None:
    assert plan.chain_name(True) == "open"
    one, other = plan.chain_name(("pypi.org:443",)), plan.chain_name((":5432",))
    assert one == plan.chain_name(("pypi.org:443",)) != other
    assert re.fullmatch(r"allow_[0-9a-f]{12}", one)
    assert plan.needs_names(("b.example:1", "10.0.0.0/8", "a.example")) == ["a.example", "b.example"]


def test_the_servers_table_refuses_the_machine_and_inbound_and_masquerades_the_pool() -> None:
    script = plan.base_ruleset("wisp_42", POOL)
    assert script.startswith("table inet wisp_42\ndelete table inet wisp_42\n")  # a leftover starts afresh
    assert f'iifname "wsp*" {plan.REFUSE}' in script  # input: nothing reaches the machine itself
    forward = script[script.index("chain forward"):script.index("chain postrouting")]
    assert forward.index('oifname "wsp*" ct state established,related accept') < forward.index('oifname "wsp*" drop')
    assert "iifname vmap @egress" in forward
    assert 'ip saddr 10.239.0.0/16 oifname != "wsp*" masquerade' in script
    assert plan.attach_script("wisp_42", "wsp0000abcd", "open") == \
        "add element inet wisp_42 egress { wsp0000abcd : jump open }\n"
    assert plan.detach_script("wisp_42", "wsp0000abcd") == "delete element inet wisp_42 egress { wsp0000abcd }\n"


def test_each_side_of_the_pair_is_configured_last_the_default_route() -> None:
    address = ipaddress.IPv4Address("10.239.3.4")
    machine = plan.machine_side("wsp00000001", 4321, POOL, address).splitlines()
    assert machine == ["link add wsp00000001 type veth peer name eth0 netns 4321", "link set wsp00000001 up",
                       "addr add 10.239.0.1/32 dev wsp00000001", "route add 10.239.3.4/32 dev wsp00000001"]
    assert machine[plan.PAIR_LINE - 1].startswith("link add") and machine[plan.ROUTE_LINE - 1].startswith("route add")


def test_the_containers_side_is_the_kernels_structures() -> None:
    if ctypes.sizeof(ctypes.c_void_p) == 8:  # struct rtentry on x86_64 and aarch64, as gcc lays it out
        assert ctypes.sizeof(RtEntry) == 120
    request = ifreq_address("eth0", "10.239.3.4")
    assert len(request) == 40 and request[:16] == b"eth0" + b"\0" * 12
    assert request[16:24] == b"\x02\x00\x00\x00\x0a\xef\x03\x04"  # AF_INET, port 0, the address
    host = route("eth0", "10.239.0.1", None)
    assert bytes(host.dst.addr) == bytes([10, 239, 0, 1]) and host.flags == RTF_UP | RTF_HOST and host.dev == b"eth0"
    default = route("eth0", None, "10.239.0.1")
    assert bytes(default.dst.addr) == bytes(4) and bytes(default.genmask.addr) == bytes(4)
    assert bytes(default.gateway.addr) == bytes([10, 239, 0, 1]) and default.flags == RTF_UP | RTF_GATEWAY


@pytest.mark.parametrize(("stderr", "line"), [
    ("RTNETLINK answers: File exists\nCommand failed -:4", 4),
    ("Error: Device for nexthop is not up.\nCommand failed -:2", 2),
    ("ip: command not found", None),
])
def test_the_failing_line_of_a_batch_is_found(stderr: str, line: int | None) -> None:
    assert plan.failed_line(stderr) == line


@pytest.mark.parametrize(("conf", "servers"), [
    ("nameserver 10.255.255.53\n", ["10.255.255.53"]),
    ("# comment\nnameserver 127.0.0.53\noptions edns0\nsearch x\n", []),  # a local resolver: unreachable
    ("nameserver 1.1.1.1\nnameserver 2606:4700::1111\nnameserver 1.1.1.1\nnameserver 9.9.9.9",
     ["1.1.1.1", "9.9.9.9"]),
    ("", []),
])
def test_containers_ask_the_machines_name_servers_that_are_not_loopback(conf: str, servers: list[str]) -> None:
    assert plan.nameservers(conf) == servers


ROUTES = ("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
          "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default via 192.0.2.1
          "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # 192.0.2.0/24
          "wsp0000abcd\t0500EF0A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n")  # a container: 10.239.0.5


@pytest.mark.parametrize(("extra", "pool", "taken"), [
    ("", "10.239.0.0/16", []),  # the default route and the containers' own routes do not count
    ("br0\t0000EF0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n", "10.239.0.0/16", ["10.239.0.0/16 on br0"]),
    ("", "192.0.2.0/29", ["192.0.2.0/24 on eth0"]),
])
def test_a_pool_the_machine_routes_elsewhere_is_found(extra: str, pool: str, taken: list[str]) -> None:
    assert plan.overlapping_routes(ROUTES + extra, ipaddress.IPv4Network(pool)) == taken


def test_tables_of_servers_that_are_gone_are_found() -> None:
    listing = "table inet wisp_10\ntable inet wisp_11\ntable ip nat\ntable inet wisp_x\ntable inet other_12\n"
    assert plan.stale_tables(listing, lambda pid: pid == 11) == ["wisp_10"]


@pytest.mark.parametrize(("routes", "found"), [
    ("Iface\tDestination\tGateway\n", False),
    ("Iface\tDestination\tGateway\neth0\t0100EF0A\t00000000\n", False),
    ("Iface\tDestination\tGateway\neth0\t0100EF0A\t00000000\neth0\t00000000\t0100EF0A\n", True),
])
def test_a_container_waits_for_a_default_route(routes: str, found: bool) -> None:
    assert has_default_route(routes) is found


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str, *, source: str | None = None) -> None:
        self.lines.append(line)


class _Runtime:
    name = "zygote"


class _Sandbox:
    name = "sandbox"

    def __init__(self, egress: Egress) -> None:
        self.egress = egress


@pytest.mark.parametrize(("runtime", "value", "wrapped", "says"), [
    (_Runtime(), False, False, None),
    (_Runtime(), True, False, "f asks for network=True, but containers of the 'zygote' runtime are not "
                              "network-isolated"),
    (_Sandbox(Egress(missing="nft not found")), ("pypi.org:443",), False,
     "f asks for network=['pypi.org:443'], but this server cannot give sandboxed containers a network "
     "(nft not found); its containers have loopback only."),
    (_Sandbox(Egress(missing="nft not found")), False, False, None),
    (_Sandbox(Egress(missing="no namespaces", isolated=False)), True, False,
     "f asks for network=True, but containers of the 'sandbox' runtime are not network-isolated"),
    (_Sandbox(Egress()), True, True, None),
])
def test_a_function_gets_a_network_where_the_runtime_gives_one_and_hears_why_not(
        runtime: Any, value: Any, wrapped: bool, says: str | None) -> None:
    log = _Log()
    wrap, env = with_network(runtime, "f", value, log)
    launcher = wrap(object())  # type: ignore[arg-type]
    assert isinstance(launcher, EgressLauncher) is wrapped
    assert env == ({NETWORK_ENV: "1"} if wrapped else {})
    if says is None:
        assert log.lines == []
    else:
        assert len(log.lines) == 1 and says in log.lines[0]


def test_the_deploy_shows_the_servers_notices_as_they_are() -> None:
    out = io.StringIO()
    BuildProgress(out)({"event": "notice", "line": "f asks for network=True, but ..."})
    assert out.getvalue() == "f asks for network=True, but ...\n"

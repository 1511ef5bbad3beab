"""What egress of a sandboxed container is made of (issue 15, point 1), as pure functions: the
names and addresses of its veth, the nftables table of a server, a function's policy chain.
`egress.py` runs them (`ip`, `nft`).

The shape: each container with `network=` gets a veth pair, `eth0` in its network namespace and
`wsp<8 hex>` on the machine. Every machine-side end carries the same gateway address (the pool's
first), each container one address of the pool (a /32 routed to its veth). One table per server
(`inet wisp_<pid>`):

- `input`: anything from a `wsp*` interface to the machine itself is refused (control API,
  gateway, every address of the machine, IPv6 link-local included);
- `forward`: nothing new goes *into* a `wsp*` interface (no connection from outside, nor from
  another container); what comes out of one of this server's veths jumps to its function's
  policy chain (`egress`, a map from interface name to chain), which accepts what the function's
  `network=` allows and refuses the rest;
- `postrouting`: the pool's addresses leave masqueraded (NAT) behind the machine's address.

Refusals are ICMP admin-prohibited, so a connection fails at once ("No route to host") rather
than hang until its timeout.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence

from ..._network import Allowed, NetworkValue, allow_list

PREFIX = "wsp"  # machine-side veth names, all servers alike (the rules match `wsp*`)
DEFAULT_POOL = "10.239.0.0/16"
CONTAINER_IF = "eth0"
REFUSE = "reject with icmpx type admin-prohibited"
DNS_PORT = 53


def veth_name(token: int) -> str:
    """A machine-side veth name (15 characters at most): `wsp` and 8 hex digits."""
    return f"{PREFIX}{token & 0xFFFFFFFF:08x}"


def gateway(pool: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The containers' default gateway: the pool's first address, on every machine-side veth."""
    return pool.network_address + 1


def container_address(pool: ipaddress.IPv4Network, n: int) -> ipaddress.IPv4Address:
    """The `n`th candidate address of a container (wrapping around): neither the network's
    address, the gateway nor the broadcast one."""
    usable = pool.num_addresses - 3
    if usable < 1:
        raise ValueError(f"the egress pool {pool} is too small: give it at least a /29")
    return pool.network_address + 2 + n % usable


def parse_pool(text: str) -> ipaddress.IPv4Network:
    """WISP_EGRESS_POOL: an IPv4 network of private addresses, /29 or larger."""
    try:
        pool = ipaddress.IPv4Network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"WISP_EGRESS_POOL={text!r} is not an IPv4 network ({exc}); write for example "
                         f"WISP_EGRESS_POOL={DEFAULT_POOL}") from None
    if not pool.is_private or pool.prefixlen > 29:
        raise ValueError(f"WISP_EGRESS_POOL={text!r} must be a private IPv4 network of /29 or larger, "
                         f"as in {DEFAULT_POOL}")
    return pool


def overlapping_routes(routes: str, pool: ipaddress.IPv4Network) -> list[str]:
    """The machine's routes (/proc/net/route's text) into the pool, but the containers' own
    (`wsp*`) and the default route: a pool there would hide those networks from the machine."""
    found = []
    for line in routes.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[0].startswith(PREFIX):
            continue
        try:
            destination = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
            network = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
        except ValueError:
            continue
        if network.prefixlen and network.overlaps(pool):
            found.append(f"{network} on {fields[0]}")
    return found


def table_name(server_pid: int) -> str:
    return f"wisp_{server_pid}"


def stale_tables(listing: str, alive: Callable[[int], bool]) -> list[str]:
    """Tables of servers that are gone (`nft list tables` output; `alive(pid)`: whether that
    process runs): a server killed before it could remove its own."""
    found = re.findall(r"^table inet (wisp_(\d+))$", listing, flags=re.MULTILINE)
    return [name for name, pid in found if not alive(int(pid))]


def base_ruleset(table: str, pool: ipaddress.IPv4Network) -> str:
    """The server's table (an `nft -f` script): created empty, so a leftover of the same name
    starts again from nothing."""
    wild = f'"{PREFIX}*"'
    return "\n".join([
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  map egress { type ifname : verdict; }",
        "  chain input {",
        "    type filter hook input priority filter - 10; policy accept;",
        f"    iifname {wild} {REFUSE}",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter - 10; policy accept;",
        f"    oifname {wild} ct state established,related accept",
        f"    oifname {wild} drop",
        "    iifname vmap @egress",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ip saddr {pool} oifname != {wild} masquerade",
        "  }",
        "}",
        "",
    ])


def chain_name(value: NetworkValue) -> str:
    """A policy chain per distinct `network=` value (functions that ask the same share it)."""
    if value is True:
        return "open"
    return "allow_" + hashlib.sha256("\n".join(value if not isinstance(value, bool) else ()).encode()).hexdigest()[:12]


def needs_names(value: NetworkValue) -> list[str]:
    """The host names of an allow-list, which the server resolves for each container."""
    return sorted({a.host for a in allow_list(value) if a.host is not None})


def nameservers(resolv_conf: str) -> list[str]:
    """The IPv4 name servers of /etc/resolv.conf that a container can reach (not loopback)."""
    found = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ipaddress.IPv4Address(parts[1])
            except ValueError:
                continue
            if not address.is_loopback and parts[1] not in found:
                found.append(parts[1])
    return found


def _ports(allowed: Allowed) -> list[str]:
    if allowed.ports is None:
        return [""]
    low, high = allowed.ports
    span = str(low) if low == high else f"{low}-{high}"
    return [f" tcp dport {span}", f" udp dport {span}"]


def policy_rules(value: NetworkValue, resolved: Mapping[str, Sequence[str]], dns: Sequence[str]) -> list[str]:
    """A function's policy as rule statements, ending in a refusal. `resolved`: host name ->
    its IPv4 addresses now; a name without any allows nothing. `dns`: the name servers a list
    with host names may ask."""
    if value is True:
        return ["accept"]
    rules = []
    entries = allow_list(value)
    if any(a.host is not None for a in entries):
        for server in dns:
            rules += [f"ip daddr {server} udp dport {DNS_PORT} accept", f"ip daddr {server} tcp dport {DNS_PORT} accept"]
    for allowed in entries:
        if allowed.host is not None:
            addresses = sorted(set(resolved.get(allowed.host, ())), key=ipaddress.IPv4Address)
            if not addresses:
                continue
            where = "ip daddr { " + ", ".join(addresses) + " }"
        elif allowed.network is not None:
            where = f"ip daddr {allowed.network}"
        else:
            where = ""
        for port in _ports(allowed):
            rules.append(f"{where}{port} accept".strip())
    return [*rules, REFUSE]


def policy_script(table: str, chain: str, rules: Sequence[str]) -> str:
    """Create (or refill) a policy chain."""
    lines = [f"add chain inet {table} {chain}", f"flush chain inet {table} {chain}"]
    lines += [f"add rule inet {table} {chain} {rule}" for rule in rules]
    return "\n".join([*lines, ""])


def attach_script(table: str, veth: str, chain: str) -> str:
    """The veth into its function's policy (after `policy_script` in the same transaction)."""
    return f"add element inet {table} egress {{ {veth} : jump {chain} }}\n"


def detach_script(table: str, veth: str) -> str:
    return f"delete element inet {table} egress {{ {veth} }}\n"


def machine_side(veth: str, pid: int, pool: ipaddress.IPv4Network, address: ipaddress.IPv4Address) -> str:
    """`ip -b` commands on the machine (the container's side is `netns.configure_inside`): the pair (its other end `eth0` in the namespace of `pid`),
    this end up with the gateway address, and the container's address routed to it. Line 1
    fails with EEXIST for a name another veth has, line 4 for an address another container has."""
    return "\n".join([f"link add {veth} type veth peer name {CONTAINER_IF} netns {pid}", f"link set {veth} up",
                      f"addr add {gateway(pool)}/32 dev {veth}", f"route add {address}/32 dev {veth}", ""])


PAIR_LINE, ROUTE_LINE = 1, 4  # machine_side's lines whose EEXIST means: try another name, address


def failed_line(stderr: str) -> int | None:
    """Which line of an `ip -b -` batch failed ("Command failed -:N"), or None."""
    found = re.search(r"Command failed -:(\d+)", stderr)
    return int(found.group(1)) if found else None


__all__ = ["DEFAULT_POOL", "PREFIX", "attach_script", "base_ruleset", "chain_name", "container_address",
           "detach_script", "failed_line", "gateway", "machine_side", "nameservers", "needs_names", "overlapping_routes", "parse_pool",
           "policy_rules", "policy_script", "stale_tables", "table_name", "veth_name"]

"""Opt-in egress of sandboxed containers (`network=`, issue 15 point 1): a veth pair per
container, NAT on the machine's side, and nftables rules that refuse the machine itself and
whatever the function's allow-list does not name. What the pieces are: `egress_plan.py`.

A container of a function with `network=` is told so (`NETWORK_ENV` in its fork request's
environment): once its sandbox is made it waits for a default route (`wisp._runtime.sandbox.
await_network`) before any user code runs. Meanwhile the server sees its network namespace
appear (it differs from its parent's), makes the pair with the container's end inside it, and
adds the container's interface to its function's policy, then gives `eth0` its address and
routes from a thread of its own in the container's namespace (`netns.py`). When the container has exited, its
interface leaves the policy and the pair is deleted (the kernel would delete it with the
namespace anyway).

`Egress.probe` says at server start, in one line, what is missing (root, `ip`, `nft`,
the kernel's nftables); such a server starts containers of `network=` functions without network,
and says so in the app's logs when one is deployed.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..._network import NetworkValue, describe
from . import egress_plan as plan
from . import netns
from .base import ContainerProcess, Launcher, Log
from .gpus import NO_GPUS, Grant

NETWORK_ENV = "WISP_NETWORK"  # "1" in a container that gets a network: it waits for its route
POOL_ENV = "WISP_EGRESS_POOL"
COMMAND_TIMEOUT = 10.0
NAMESPACE_TIMEOUT = 10.0
RESOLVE_TIMEOUT = 5.0
ATTEMPTS = 8  # names or addresses another server's container holds: try others
FORWARDING = "/proc/sys/net/ipv4/ip_forward"


class EgressError(Exception):
    """A container's network could not be made; the message says what failed."""


async def _output(argv: list[str], data: str | None = None, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
    """Run a command (its stdin `data`); its exit code, its output and what it wrote to stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(data.encode() if data is not None else None), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return -1, "", f"{argv[0]} took more than {timeout:.0f} s"
    return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()


async def _run(argv: list[str], data: str | None = None, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
    """Run a command; its exit code and what it wrote to stderr."""
    code, _, err = await _output(argv, data, timeout)
    return code, err


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


async def own_namespace(pid: int, timeout: float = NAMESPACE_TIMEOUT) -> None:
    """Wait until `pid` is in a network namespace of its own (its sandbox made one after the
    fork): the veth must not land in its zygote's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine, parent = _namespace(pid), _parent(pid)
        if mine is None:
            raise EgressError(f"the container (pid {pid}) exited before its network was made")
        theirs = _namespace(parent) if parent else None
        if theirs is not None and mine != theirs:
            return
        await asyncio.sleep(0.002)
    raise EgressError(f"the container (pid {pid}) made no network namespace of its own within {timeout:.0f} s")


def _forwarding_on() -> bool:
    """IPv4 forwarding on; whether it was off. Left on at exit (other servers may need it)."""
    with open(FORWARDING) as current:
        if current.read().strip() != "0":
            return False
    with open(FORWARDING, "w") as switch:
        switch.write("1")
    return True


@dataclass
class Attachment:
    """One container's network: its machine-side veth and the policy chain it jumps to."""

    veth: str
    address: ipaddress.IPv4Address
    chain: str


@dataclass
class Egress:
    """The server's egress: its nftables table, made at the first container that needs it."""

    missing: str | None = None  # why containers get no network here; None: they can
    isolated: bool = True  # False: containers share the server's network anyway (no namespaces)
    pool: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network(plan.DEFAULT_POOL))
    table: str = field(default_factory=lambda: plan.table_name(os.getpid()))
    resolv_conf: str = "/etc/resolv.conf"
    _ready: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _chains: set[str] = field(default_factory=set)  # the policy chains made
    _turn: int = field(default_factory=lambda: secrets.randbits(32))  # the last address given (`_next_address`)
    attached: dict[str, Attachment] = field(default_factory=dict)  # veth -> attachment

    @classmethod
    def probe(cls, missing_namespaces: bool = False, environ: Mapping[str, str] | None = None) -> Egress:
        """What this machine gives, said in one line at server start when something is missing."""
        environ = os.environ if environ is None else environ
        try:
            pool = plan.parse_pool(environ.get(POOL_ENV) or plan.DEFAULT_POOL)
        except ValueError as exc:
            return cls._missing(str(exc))
        with contextlib.suppress(OSError), open("/proc/net/route") as routes:
            taken = plan.overlapping_routes(routes.read(), pool)
            if taken:
                return cls._missing(f"{POOL_ENV}={pool} overlaps the machine's own networks ({', '.join(taken)}); "
                                    f"set {POOL_ENV} to a private network the machine does not use")
        if missing_namespaces:  # the sandbox's own line says so; `with_network` tells each app
            return cls(missing="containers share the server's network here (no network namespaces)", isolated=False)
        if os.geteuid() != 0:
            return cls._missing("the server is not root: it cannot make veths and nftables rules")
        absent = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
        if absent:
            return cls._missing(f"{', '.join(absent)} not found (install iproute2 and nftables: "
                                "apt-get install iproute2 nftables)")
        try:
            done = subprocess.run(["nft", "list", "tables"], capture_output=True, timeout=COMMAND_TIMEOUT, check=False)
            why = done.stderr.decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            done, why = None, str(exc)
        if done is None or done.returncode != 0:
            return cls._missing(f"the kernel refuses nftables ({why})")
        egress = cls(pool=pool)
        if not egress.dns():
            print(f"wisp server: sandbox: containers with network= cannot resolve host names: {egress.resolv_conf} "
                  "names no name server outside loopback; give them addresses, or point it at a reachable server",
                  file=sys.stderr, flush=True)
        return egress

    @classmethod
    def _missing(cls, why: str) -> Egress:
        print(f"wisp server: sandbox: functions with network= get no network: {why}", file=sys.stderr, flush=True)
        return cls(missing=why)

    async def _setup(self) -> None:
        """The table (after removing those of servers that are gone), and IPv4 forwarding on."""
        if self._ready:
            return
        code, listing, _ = await _output(["nft", "list", "tables"])
        stale = [name for name in plan.stale_tables(listing if code == 0 else "", _alive) if name != self.table]
        script = "".join(f"delete table inet {name}\n" for name in stale) + plan.base_ruleset(self.table, self.pool)
        code, err = await _run(["nft", "-f", "-"], script)
        if code != 0:
            raise EgressError(f"nft refused the server's table: {err}")
        try:
            turned_on = _forwarding_on()
        except OSError as exc:
            raise EgressError(f"could not turn IPv4 forwarding on ({exc})") from exc
        if turned_on:
            print("wisp server: egress: turned IPv4 forwarding on (net.ipv4.ip_forward=1) for network= functions; "
                  f"table inet {self.table} filters what they send; forwarding stays on", file=sys.stderr, flush=True)
        self._ready = True

    async def _resolve(self, names: list[str], log: Log) -> dict[str, list[str]]:
        """The host names' IPv4 addresses now, all at once (within RESOLVE_TIMEOUT, well inside
        the container's wait); a name that does not resolve is said in the app's logs."""
        loop = asyncio.get_running_loop()

        async def one(name: str) -> list[str]:
            try:
                infos = await asyncio.wait_for(loop.getaddrinfo(name, None, family=socket.AF_INET), RESOLVE_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                log.write(f"[wisp] network: {name} did not resolve ({exc or 'timed out'}); "
                          "this container cannot reach it")
                return []
            return sorted({str(info[4][0]) for info in infos})

        return dict(zip(names, await asyncio.gather(*(one(name) for name in names))))

    def dns(self) -> list[str]:
        try:
            with open(self.resolv_conf) as conf:
                return plan.nameservers(conf.read())
        except OSError:
            return []

    async def _enter_policy(self, veth: str, value: NetworkValue, rules: list[str]) -> str:
        """The veth into its function's policy chain, which is made (or, with host names,
        refilled) in the same transaction; the chain's name. A chain stays while the server runs
        (one per distinct `network=` value): removing it would slow the next cold start."""
        chain = plan.chain_name(value)
        script = "" if chain in self._chains and not plan.needs_names(value) else \
            plan.policy_script(self.table, chain, rules)
        code, err = await _run(["nft", "-f", "-"], script + plan.attach_script(self.table, veth, chain))
        if code != 0:
            raise EgressError(f"nft refused the container's policy ({describe(value)}): {err}")
        self._chains.add(chain)
        return chain

    def _next_address(self) -> ipaddress.IPv4Address:
        """The pool's addresses in turn, from a random start: one comes back only after all the
        others (the kernel still keeps replies of a stopped container's connections for a while)."""
        self._turn += 1
        return plan.container_address(self.pool, self._turn)

    async def _pair(self, pid: int, veth: str) -> ipaddress.IPv4Address:
        """The veth pair, `eth0` inside the container's namespace, and an address no other
        container of any server on this machine has (the kernel refuses a second route to it)."""
        address = self._next_address()
        code, problem = await _run(["ip", "-b", "-"], plan.machine_side(veth, pid, self.pool, address))
        line = plan.failed_line(problem)
        for _ in range(ATTEMPTS):
            if code == 0:
                return address
            if line != plan.ROUTE_LINE or "exists" not in problem:
                break
            address = self._next_address()
            code, problem = await _run(["ip", "route", "add", f"{address}/32", "dev", veth])
        if line != plan.PAIR_LINE:
            await _run(["ip", "link", "del", veth])
        raise EgressError(f"could not make the container's veth: {problem}")

    async def attach(self, pid: int, value: NetworkValue, log: Log) -> Attachment:
        """Give the container `pid` its network as `value` allows: the pair and the policy entry
        at once, then (only with both in place) the container's address and route."""
        rules = plan.policy_rules(value, await self._resolve(plan.needs_names(value), log), self.dns())
        await own_namespace(pid)
        async with self._lock:
            await self._setup()
        veth = plan.veth_name(secrets.randbits(32))
        pair, policy = await asyncio.gather(self._pair(pid, veth), self._enter_policy(veth, value, rules),
                                            return_exceptions=True)
        if isinstance(pair, BaseException) or isinstance(policy, BaseException):
            await _run(["ip", "link", "del", veth])
            if not isinstance(policy, BaseException):
                await _run(["nft", "-f", "-"], plan.detach_script(self.table, veth))
            failure = pair if isinstance(pair, BaseException) else policy
            assert isinstance(failure, BaseException)
            raise failure
        attachment = self.attached[veth] = Attachment(veth, pair, policy)
        try:
            try:
                await asyncio.to_thread(netns.configure_inside, pid, plan.CONTAINER_IF, str(pair),
                                        str(plan.gateway(self.pool)))
            except OSError as exc:
                raise EgressError(f"could not configure the container's {plan.CONTAINER_IF}: {exc}") from exc
        except BaseException:
            await self.detach(attachment)
            raise
        return attachment

    async def detach(self, attachment: Attachment) -> None:
        """The container has exited: its interface leaves the policy and its pair goes."""
        if self.attached.pop(attachment.veth, None) is None:
            return
        # The link first: a container still running (a failed attach) never sends outside its policy.
        await _run(["ip", "link", "del", attachment.veth])  # gone already when its namespace was
        await _run(["nft", "-f", "-"], plan.detach_script(self.table, attachment.veth))

    async def close(self) -> None:
        """The server stops: its table goes (its containers have stopped)."""
        for attachment in list(self.attached.values()):
            await self.detach(attachment)
        if self._ready:
            await _run(["nft", "delete", "table", "inet", self.table])
            self._ready = False


class Attached:
    """A container with a network, which it gives back once it has exited."""

    def __init__(self, process: ContainerProcess, egress: Egress, attachment: Attachment) -> None:
        self.process = process
        self.pid = process.pid
        self.note = process.note
        self._egress = egress
        self._attachment: Attachment | None = attachment

    def lines(self) -> AsyncIterator[bytes]:
        return self.process.lines()

    async def wait(self) -> int:
        code = await self.process.wait()
        if self._attachment is not None:
            attachment, self._attachment = self._attachment, None
            await self._egress.detach(attachment)
        return code

    async def stop(self, grace: float) -> None:
        await self.process.stop(grace)

    def out_of_memory(self) -> str | None:
        return self.process.out_of_memory()


class EgressLauncher:
    """A launcher whose containers get the network their function's `network=` asks for."""

    def __init__(self, inner: Launcher, egress: Egress, value: NetworkValue, log: Log) -> None:
        self.inner = inner
        self.egress = egress
        self.value = value
        self.log = log

    def prepare(self) -> None:
        self.inner.prepare()

    async def ready(self) -> str | None:
        return await self.inner.ready()

    async def start(self, socket_path: str, gpus: Grant = NO_GPUS) -> ContainerProcess:
        process = await self.inner.start(socket_path, gpus)
        try:
            attachment = await self.egress.attach(process.pid, self.value, self.log)
        except EgressError as exc:
            # It waits for a route that will not come, then runs without network and says so.
            self.log.write(f"[wisp] network: this container gets no network: {exc}")
            return process
        except BaseException:
            await process.stop(0)
            raise
        return Attached(process, self.egress, attachment)

    async def close(self) -> None:
        await self.inner.close()


def _unchanged(launcher: Launcher) -> Launcher:
    return launcher


def network_notice(runtime: Any, function: str, value: NetworkValue) -> str | None:
    """What the app's logs and the deploy's output say of a function's `network=` where the
    runtime cannot honour it as asked; None where it can (or nothing was asked)."""
    if value is False:
        return None
    egress: Egress | None = getattr(runtime, "egress", None)
    asked = describe(value)
    if egress is None or not egress.isolated:
        return (f"[wisp] {function} asks for {asked}, but containers of the '{runtime.name}' runtime are not "
                "network-isolated: they reach every network the server does. Start the server with "
                "--runtime sandbox to contain them.")
    if egress.missing is not None:
        return (f"[wisp] {function} asks for {asked}, but this server cannot give sandboxed containers a "
                f"network ({egress.missing}); its containers have loopback only.")
    return None


def with_network(runtime: Any, function: str, value: NetworkValue,
                 log: Log) -> tuple[Callable[[Launcher], Launcher], dict[str, str]]:
    """How a function's launcher is wrapped and what its containers' environment gains, as
    `network=` asks and the runtime can give. Where it cannot, the app's logs say so (once per
    deploy: `network_notice`)."""
    notice = network_notice(runtime, function, value)
    if notice is not None:
        log.write(notice)
    egress: Egress | None = getattr(runtime, "egress", None)
    if value is False or notice is not None or egress is None:
        return _unchanged, {}
    return (lambda launcher: EgressLauncher(launcher, egress, value, log)), {NETWORK_ENV: "1"}


__all__ = [
    "NETWORK_ENV",
    "Attached",
    "Attachment",
    "Egress",
    "EgressError",
    "EgressLauncher",
    "network_notice",
    "own_namespace",
    "with_network",
]

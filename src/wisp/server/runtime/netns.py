"""A container's side of its veth, configured from the server's own process (egress.py): a
short-lived thread enters the container's network namespace (`setns`, which moves only the
calling thread), gives `eth0` its address, brings it up and adds its routes with the kernel's
classic ioctls, then ends. No process is started: `nsenter … ip` cost 6 to 30 ms of a cold start
on a busy machine; this costs well under one.

Linux only, stdlib and ctypes; the structures are the kernel's (`struct ifreq`, `struct rtentry`).
"""
from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import socket
import struct
import threading

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK, SIOCADDRT = 0x8913, 0x8914, 0x8916, 0x891C, 0x890B
IFF_UP = 0x1
RTF_UP, RTF_GATEWAY, RTF_HOST = 0x1, 0x2, 0x4
IFNAMSIZ = 16
IFREQ_SIZE = 40

_libc = ctypes.CDLL(None, use_errno=True)


class SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ushort), ("addr", ctypes.c_uint8 * 4),
                ("zero", ctypes.c_uint8 * 8)]


class RtEntry(ctypes.Structure):
    """`struct rtentry` (linux/route.h), laid out as the C compiler would."""

    _fields_ = [("pad1", ctypes.c_ulong), ("dst", SockaddrIn), ("gateway", SockaddrIn), ("genmask", SockaddrIn),
                ("flags", ctypes.c_ushort), ("pad2", ctypes.c_short), ("pad3", ctypes.c_ulong),
                ("pad4", ctypes.c_void_p), ("metric", ctypes.c_short), ("dev", ctypes.c_char_p),
                ("mtu", ctypes.c_ulong), ("window", ctypes.c_ulong), ("irtt", ctypes.c_ushort)]


def sockaddr(address: str) -> SockaddrIn:
    packed = ipaddress.IPv4Address(address).packed
    return SockaddrIn(socket.AF_INET, 0, (ctypes.c_uint8 * 4)(*packed))


def ifreq_address(name: str, address: str) -> bytes:
    """`struct ifreq` holding an IPv4 address (SIOCSIFADDR, SIOCSIFNETMASK)."""
    data = struct.pack(f"{IFNAMSIZ}sHH4s8x", name.encode(), socket.AF_INET, 0, ipaddress.IPv4Address(address).packed)
    return data.ljust(IFREQ_SIZE, b"\0")


def route(device: str, destination: str | None, gateway: str | None) -> RtEntry:
    """A host route to `destination` on `device` (no gateway), or the default route via `gateway`."""
    entry = RtEntry()
    entry.dev = device.encode()
    if destination is not None:
        entry.dst, entry.genmask = sockaddr(destination), sockaddr("255.255.255.255")
        entry.flags = RTF_UP | RTF_HOST
    else:
        entry.dst, entry.genmask = sockaddr("0.0.0.0"), sockaddr("0.0.0.0")
        entry.gateway = sockaddr(gateway or "0.0.0.0")
        entry.flags = RTF_UP | RTF_GATEWAY
    return entry


def _configure(device: str, address: str, gateway: str) -> None:
    """In the namespace: the address (a /32), the link up, the gateway on the link, then the
    default route (what the container waits for) last."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCSIFADDR, ifreq_address(device, address))
        fcntl.ioctl(sock.fileno(), SIOCSIFNETMASK, ifreq_address(device, "255.255.255.255"))
        flags = struct.unpack_from("H", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, ifreq_address(device, "0.0.0.0")),
                                   IFNAMSIZ)[0]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack(f"{IFNAMSIZ}sH", device.encode(), flags | IFF_UP)
                    .ljust(IFREQ_SIZE, b"\0"))
        for entry in (route(device, gateway, None), route(device, None, gateway)):
            fcntl.ioctl(sock.fileno(), SIOCADDRT, bytes(entry))


def configure_inside(pid: int, device: str, address: str, gateway: str) -> None:
    """Configure `device` in the network namespace of `pid` from a thread of our own (which
    ends there, its namespace with it). Raises OSError saying which step failed."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the container's network namespace: {os.strerror(err)}")
            finally:
                os.close(fd)
            _configure(device, address, gateway)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"wisp-netns-{pid}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


__all__ = ["RtEntry", "configure_inside", "ifreq_address", "route"]

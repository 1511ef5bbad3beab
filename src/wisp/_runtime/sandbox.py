"""The sandbox a forked child enters (issue 15, point 1): stdlib and ctypes only.

Called from `zygote._become` after the uid drop and before the environment, the folder or any
user code, when the fork request carries a `sandbox` field (`--runtime sandbox`); a container
that a sandboxed function zygote forks ahead enters it while it waits for its request
(`enter_ahead`, from `zygote.Zygote._parked`):

- its own user, mount, pid, net, ipc and uts namespaces (one `unshare` while the child still has
  one thread), the app's uid mapped to itself, so files keep their owners;
- a root of its own, built on a tmpfs and entered with `pivot_root`: `/usr`, `/etc`, the image's
  environment and wisp's code read-only, a small `/dev`, a tmpfs `/tmp`, the app's socket folder,
  and the version's folder. Nothing else of the server's home (`WISP_HOME`: its token, the state
  file, other apps, other images) exists in it;
- pid 1 of a pid namespace: a child of an image's zygote forks once more right after the
  `unshare`; the first child stays behind, waits for it and exits with its status, so the zygote
  reports the container's exit as before (`Exited`). It ignores SIGTERM/SIGINT: the server
  signals the whole process group, which reaches pid 1 itself;
- no network but loopback (brought up) and the Unix socket it serves on, bound to a file path
  (which works across a network namespace); a container of a function with `network=` waits
  until the server has given it an `eth0` and a default route (`await_network`);
- no capabilities, `no_new_privs`, a seccomp deny-list (`program`) and lowered rlimits.

A function zygote is sandboxed this way once, then takes one more user namespace of its own,
whose capabilities reach only the namespaces it makes. Its containers need no process waiting
for them: a helper it forks makes a pid namespace, forks the container into it and exits, and
the zygote adopts it (`zygote.Zygote._fork`). The container, pid 1 already, makes its mount, net,
ipc and uts namespaces with those capabilities (so it may mount its own /proc), a fresh tmpfs
`/tmp` and a write layer (overlay on that tmpfs) over the version's folder, which is `$HOME` and
`/root` to the app, then a user namespace of its own, and drops every capability. The zygote's
seccomp filter leaves `unshare` and `mount` to it; its containers' filter denies them.

`probe()` tries each mechanism in a throwaway child (`python -m wisp._runtime.sandbox --probe`),
so the server can say at start what is missing; a piece named in the request's `without` is skipped.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import platform
import re
import resource
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
NAMESPACE_FLAGS = NAMESPACES | CLONE_NEWCGROUP  # clone() with any of these is denied in containers

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
MNT_DETACH = 2
# statvfs's f_flag bits, and the mount flags they stand for: a read-only remount inside a user
# namespace must keep the flags the mount already had, or the kernel refuses it.
ST_TO_MS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME,
            4096: MS_RELATIME}

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECCOMP_MODE_FILTER = 2
CAP_LAST = 63  # beyond the kernel's last capability: its PR_CAPBSET_DROP fails and is ignored
CAPABILITY_VERSION_3 = 0x20080522
SIOCSIFFLAGS, IFF_UP = 0x8914, 0x1

DEFAULT_TMP_MB = 512
SYSTEM_PATHS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
MASKED = ("/etc/shadow", "/etc/gshadow")  # never shown, whatever uid a container has
HOME_LAYER = "/tmp/.wisp-home"  # a container's writes to its version folder (overlay upper/work)
NETWORK_ENV = "WISP_NETWORK"  # in a container's environment: the server gives it a network (egress.py)
NETWORK_TIMEOUT = 10.0  # seconds a container waits for that network's default route
GPU_NODE = re.compile(r"/dev/nvidia\d+")
GPU_SHARED_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")  # the driver's

# -- seccomp: a deny-list as a classic BPF program (pure) ----------------------------------------

# Denied in every sandboxed process: debugging others, the kernel's keyring, modules, BPF, perf,
# reboot and swap, the clock, raw I/O ports, file handles (a way around a bind mount), io_uring.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "syslog", "vhangup", "quotactl", "lookup_dcookie",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "iopl", "ioperm",
    "open_by_handle_at", "name_to_handle_at", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "setns", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr",
)
# Also denied in containers; a sandboxed function zygote needs them to make its containers' namespaces.
CONTAINER_DENIED = ("unshare", "mount", "umount2")

SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "pidfd_getfd": 438,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249,
        "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "syslog": 103, "vhangup": 153, "quotactl": 179,
        "lookup_dcookie": 212, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305,
        "iopl": 172, "ioperm": 173, "open_by_handle_at": 304, "name_to_handle_at": 303, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "setns": 308, "pivot_root": 155, "chroot": 161,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "unshare": 272, "mount": 165, "umount2": 166, "clone": 56, "clone3": 435,
    },
    "aarch64": {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "pidfd_getfd": 438,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "keyctl": 219, "add_key": 217, "request_key": 218,
        "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106,
        "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "syslog": 116, "vhangup": 58, "quotactl": 60,
        "lookup_dcookie": 18, "settimeofday": 170, "clock_settime": 112, "adjtimex": 171, "clock_adjtime": 266,
        "open_by_handle_at": 265, "name_to_handle_at": 264, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "setns": 268, "pivot_root": 41, "chroot": 51, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "unshare": 97, "mount": 40, "umount2": 39, "clone": 220, "clone3": 435,
    },
}
ABSENT = {"x86_64": frozenset[str](), "aarch64": frozenset({"iopl", "ioperm"})}  # calls an architecture lacks
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers

BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_KILL_PROCESS = 0x80000000
DATA_NR, DATA_ARCH, DATA_ARG0 = 0, 4, 16  # offsets in struct seccomp_data (arg 0's low word, little-endian)

Instruction = tuple[int, int, int, int]  # (code, jump if true, jump if false, k)


def program(arch: str, denied: Iterable[str]) -> list[Instruction]:
    """The filter: another architecture's calls (or x32's) kill the process; a denied call
    fails with EPERM; clone() asking for a namespace fails with EPERM and clone3() with ENOSYS
    (its flags live in memory a filter cannot read; the C library then falls back to clone);
    everything else is allowed."""
    numbers = SYSCALLS[arch]
    names = sorted(set(denied) - ABSENT[arch])
    unknown = [name for name in names if name not in numbers]
    if unknown:
        raise ValueError(f"no syscall number for {', '.join(unknown)} on {arch}")
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    code: list[Instruction] = [
        (BPF_LD_W_ABS, 0, 0, DATA_ARCH),
        (BPF_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (BPF_LD_W_ABS, 0, 0, DATA_NR),
    ]
    if arch == "x86_64":
        code += [(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT), (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS)]
    # Each denied number jumps to the shared `deny` at the end: len(names) - i - 1 checks, then
    # the clone block (5 instructions) and the allow are skipped.
    for i, name in enumerate(names):
        code.append((BPF_JEQ_K, len(names) - i - 1 + 6, 0, numbers[name]))
    code += [
        (BPF_JEQ_K, 0, 1, numbers["clone3"]),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
        (BPF_JEQ_K, 0, 2, numbers["clone"]),  # jump over the two clone instructions to the allow
        (BPF_LD_W_ABS, 0, 0, DATA_ARG0),
        (BPF_JSET_K, 1, 0, NAMESPACE_FLAGS),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET_K, 0, 0, deny),
    ]
    return code


def run_filter(code: Sequence[Instruction], nr: int, arch: int, arg0: int = 0) -> int:
    """What the kernel would return for one call: a tiny interpreter of the instructions
    `program` uses, so tests check the program's meaning, not its bytes."""
    data = {DATA_NR: nr, DATA_ARCH: arch, DATA_ARG0: arg0}
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == BPF_RET_K:
            return k
        if op == BPF_LD_W_ABS:
            acc = data[k]
        elif op in (BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K):
            taken = acc == k if op == BPF_JEQ_K else acc >= k if op == BPF_JGE_K else bool(acc & k)
            pc += jt if taken else jf
        else:
            raise ValueError(f"unknown instruction {op:#x}")
        pc += 1


def machine_arch() -> str | None:
    arch = platform.machine()
    return arch if arch in SYSCALLS else None


# -- the mount plan (pure) -----------------------------------------------------------------------

@dataclass(frozen=True)
class Mount:
    """One step of building the new root: `kind` is "bind" (read-only unless `writable`),
    "tmpfs", "symlink" (to `source`), "dev" (a device node bound from the host), "dir"."""

    kind: str
    target: str
    source: str = ""
    writable: bool = False
    size_mb: int = 0


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def read_only_paths(system: Mapping[str, str | None], python_paths: Iterable[str], hidden: Iterable[str],
                    skipped: list[str] | None = None) -> list[str]:
    """What a sandbox shows read-only: the system folders that are folders (`system`: path ->
    its symlink target, or None), then the interpreter's own paths, outermost first and without
    any that another one already covers. A path that is `/`, or that holds a hidden one (the
    server's home), is never shown: it goes to `skipped`."""
    hidden = list(hidden)
    chosen: list[str] = [path for path, link in system.items() if link is None]
    for raw in sorted({os.path.normpath(p) for p in python_paths if p}, key=lambda p: (p.count("/"), p)):
        if raw == "/" or any(_inside(h, raw) for h in hidden):
            if skipped is not None:
                skipped.append(raw)
            continue
        if not any(_inside(raw, c) for c in chosen):
            chosen.append(raw)
    return chosen


def gpu_nodes(devices: Iterable[str], present: Callable[[str], bool]) -> list[str]:
    """The device nodes a container holding GPUs `devices` (their `/dev/nvidiaN`, from the
    server's grant) gets in its /dev: those, and the driver's shared nodes that exist here
    (`/dev/nvidiactl`, `/dev/nvidia-uvm`, ...); none without a GPU. Anything but a
    `/dev/nvidiaN` in `devices` is refused."""
    wanted = list(devices)
    wrong = [path for path in wanted if not GPU_NODE.fullmatch(path)]
    if wrong:
        raise ValueError(f"not a GPU's device node: {', '.join(wrong)}")
    return [path for path in (*wanted, *GPU_SHARED_NODES) if wanted and present(path)]


def root_plan(*, system: Mapping[str, str | None], read_only: Sequence[str], version_dir: str, socket_dir: str,
              tmp_mb: int, devices: Sequence[str] = ()) -> list[Mount]:
    """Every step of a sandbox's root, outermost targets first (a tmpfs /tmp before what is
    bound below it): system links, read-only binds, a small /dev (with the GPU nodes in
    `devices`), /proc (mounted by pid 1 of the new pid namespace), a tmpfs /tmp, the socket
    folder (writable: the container binds its socket there) and the version's folder (read-only
    here; a container forked from this root gets a write layer over it)."""
    steps = [Mount("symlink", path, link) for path, link in system.items() if link is not None]
    steps += [Mount("bind", path, path) for path in read_only]
    steps += [Mount("dev", path, "/dev/null") for path in MASKED]  # unreadable as it is, unless the app runs as root
    steps += [Mount("tmpfs", "/dev", size_mb=1), *(Mount("dev", f"/dev/{name}", f"/dev/{name}") for name in DEVICES),
              Mount("symlink", "/dev/fd", "/proc/self/fd"), Mount("symlink", "/dev/stdin", "/proc/self/fd/0"),
              Mount("symlink", "/dev/stdout", "/proc/self/fd/1"), Mount("symlink", "/dev/stderr", "/proc/self/fd/2"),
              Mount("tmpfs", "/dev/shm", size_mb=64), Mount("bind", "/proc", "/proc", writable=True), Mount("tmpfs", "/tmp", size_mb=tmp_mb),
              Mount("bind", socket_dir, socket_dir, writable=True), Mount("bind", version_dir, version_dir),
              *(Mount("dev", path, path) for path in devices)]
    return sorted(steps, key=lambda m: m.target.rstrip("/").count("/"))


def rebound_under(plan: Iterable[Mount], folder: str) -> list[Mount]:
    """The binds of `plan` below `folder`: what a container binds again over its fresh /tmp."""
    return [m for m in plan if m.kind == "bind" and m.target != folder and _inside(m.target, folder)]


def lowered_limits(current: Mapping[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """The rlimits a sandboxed process gets: no core files, at most 65536 open files, 64 MiB of
    locked memory, 4096 processes of the app's uid, never above what it had (raising one needs
    CAP_SYS_RESOURCE, which the machine does not give)."""
    wanted = {resource.RLIMIT_CORE: 0, resource.RLIMIT_NOFILE: 65536, resource.RLIMIT_MEMLOCK: 64 << 20,
              resource.RLIMIT_NPROC: 4096}
    lowered = {}
    for limit, value in wanted.items():
        soft, hard = current.get(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        new_hard = value if hard == resource.RLIM_INFINITY else min(hard, value)
        new_soft = new_hard if soft == resource.RLIM_INFINITY else min(soft, new_hard)
        lowered[limit] = (new_soft, new_hard)
    return lowered


# -- system calls --------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           f"prctl {option}")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def load_filter(code: Sequence[Instruction]) -> None:
    """no_new_privs, then the filter (the kernel wants the first for an unprivileged filter)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    filters = (_SockFilter * len(code))(*(_SockFilter(*instruction) for instruction in code))
    prog = _SockFprog(len(code), filters)
    _check(_libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """None left in any set, the bounding set included (what the user namespace gave for setup)."""
    for cap in range(CAP_LAST + 1):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)) < 0:
            break  # past the kernel's last capability
    with contextlib.suppress(OSError):
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def map_ids(uid: int, gid: int) -> None:
    """In a new user namespace: the uid/gid we had outside is ours inside too (one line each,
    which needs no privilege outside; setgroups must be denied first for the gid map). Root
    (a server without per-app uids) is 1 inside: a map holding 0 would need CAP_SETFCAP, which
    a container, made inside its zygote's namespace, no longer has."""
    _write("/proc/self/uid_map", f"{uid or 1} {uid} 1\n")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/gid_map", f"{gid or 1} {gid} 1\n")


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP))


def _mount_flags(path: str) -> int:
    flags = 0
    with contextlib.suppress(OSError):
        f_flag = os.statvfs(path).f_flag
        for st, ms in ST_TO_MS.items():
            if f_flag & st:
                flags |= ms
    return flags


def _make_target(target: str, directory: bool) -> None:
    if directory:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass


def _bind(source: str, target: str, writable: bool) -> None:
    _make_target(target, os.path.isdir(source))
    flags = _mount_flags(source) | MS_NOSUID | (0 if writable else MS_RDONLY)  # the source's own, kept
    mount(source, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def _apply(step: Mount, root: str, sources: Mapping[str, str]) -> None:
    """One step of the plan, with `root` prefixed to its target; `sources`: a path -> the name
    to bind it from (an O_PATH descriptor's /proc link: it stays reachable under a new tmpfs)."""
    target = root + step.target
    if step.kind == "dir":
        os.makedirs(target, exist_ok=True)
    elif step.kind == "symlink":
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(step.source, target)
    elif step.kind == "tmpfs":
        os.makedirs(target, exist_ok=True)
        mode = "1777" if step.target in ("/tmp", "/dev/shm") else "755"
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={step.size_mb}m,mode={mode}")
    elif step.kind == "dev":
        if step.target in MASKED and not os.path.exists(target):
            return  # nothing to mask (and a read-only /etc to create it in)
        _make_target(target, False)
        mount(step.source, target, None, MS_BIND)
    else:
        _bind(sources.get(step.source, step.source), target, step.writable)


def _open_sources(steps: Iterable[Mount]) -> dict[str, str]:
    sources = {}
    for step in steps:
        if step.kind == "bind" and step.source not in sources:
            sources[step.source] = f"/proc/self/fd/{os.open(step.source, os.O_PATH | os.O_CLOEXEC)}"
    return sources


def _close_sources(sources: Mapping[str, str]) -> None:
    for name in sources.values():
        with contextlib.suppress(OSError, ValueError):
            os.close(int(name.rsplit("/", 1)[1]))


def build_root(plan: Sequence[Mount]) -> None:
    """The new root on a tmpfs, then `pivot_root` into it; the old root is detached."""
    sources = _open_sources(plan)
    staging = "/tmp"  # any folder would do: the tmpfs mounted here becomes `/`
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for step in plan:
        _apply(step, staging, sources)
    _close_sources(sources)
    os.mkdir(staging + "/.old")
    number = SYSCALLS.get(machine_arch() or "", {}).get("pivot_root")
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: no syscall number for {platform.machine()}")
    _check(_libc.syscall(number, staging.encode(), (staging + "/.old").encode()), "pivot_root")
    os.chdir("/")
    umount("/.old")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | _mount_flags("/"))


def fresh_tmp(plan: Sequence[Mount], tmp_mb: int, home: str | None) -> bool:
    """A container's own /tmp (a tmpfs of `tmp_mb`), what the plan binds below /tmp bound again,
    and a write layer over `home` (overlay; its upper half in the same tmpfs, so writes there
    count against the same size). False when the overlay was refused: `home` stays read-only."""
    again = rebound_under(plan, "/tmp")
    sources = _open_sources([*again, *([Mount("bind", home, home)] if home else [])])
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_mb}m,mode=1777")
    for step in sorted(again, key=lambda m: m.target.count("/")):
        _apply(step, "", sources)
    layered = False
    if home:
        lower = HOME_LAYER + "/lower"
        for name in ("lower", "upper", "work"):
            os.makedirs(f"{HOME_LAYER}/{name}", mode=0o700, exist_ok=True)
        os.chmod(HOME_LAYER, 0o700)
        mount(sources.get(home, home), lower, None, MS_BIND | MS_REC)  # with what is bound below it (a workdir)
        try:
            mount("overlay", home, "overlay", MS_NOSUID,
                  f"lowerdir={lower},upperdir={HOME_LAYER}/upper,workdir={HOME_LAYER}/work")
            layered = True
        except OSError as exc:  # the server's probe found overlay; this container did not get it
            print(f"[wisp] sandbox: {home} stays read-only in this container ({exc})", file=sys.stderr, flush=True)
        # `lower` stays mounted (the code as deployed, read-only): an unmount waits for an RCU
        # grace period, milliseconds of a cold start on a busy machine.
    _close_sources(sources)
    return layered


# -- entering ------------------------------------------------------------------------------------

_plan: list[Mount] | None = None  # set in a sandboxed function zygote: its containers build on it
_pid_namespaces = False  # a sandboxed function zygote: it makes each container's pid namespace
_ahead: str | None = None  # in a container forked ahead: the `ahead_key` of the sandbox it entered


def _python_paths() -> list[str]:
    """The interpreter's files: its prefixes, the folder of its binary and what is on sys.path
    (wisp's source through the image's .pth included), but not sys.path[0], the folder the
    image's zygote was started from."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path[1:] if p and os.path.exists(p))
    return sorted(p for p in paths if os.path.isabs(p))


def _system() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            found[path] = os.readlink(path)
        elif os.path.isdir(path):
            found[path] = None
    return found


def _exit_like(status: int) -> NoReturn:
    """Exit as the waited-for child did: its code, or killed by its signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _stay_behind(child: int) -> NoReturn:
    """The first child, outside the new pid namespace: it waits for pid 1 and exits like it."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # the group's signal reaches pid 1 itself
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(1)
        _exit_like(status)


def enter(request: Mapping[str, Any]) -> None:
    """Sandbox this freshly forked, single-threaded child as the request's `sandbox` asks, or
    return at once when it asks for none. Raises when a step fails: the child then exits (its
    output says why) rather than run less contained than the server said. A container whose
    sandbox was entered ahead (`enter_ahead`) only waits for its network, if it has one."""
    settings = request.get("sandbox")
    if not settings:
        return
    without = set(settings.get("without") or ())
    zygote = bool(request.get("zygote"))
    if _ahead is None:
        _enter(request, settings, zygote, without)
    elif _ahead != ahead_key(request):  # `Zygote.hand_over` never gives a standby such a request
        raise RuntimeError("this container's sandbox was entered ahead with other settings than its request's")
    if not zygote and "namespaces" not in without and (request.get("env") or {}).get(NETWORK_ENV):
        await_network()


def _enter(request: Mapping[str, Any], settings: Mapping[str, Any], zygote: bool, without: set[str]) -> None:
    tmp_mb = int(request.get("tmp_size_mb") or DEFAULT_TMP_MB)
    if "namespaces" not in without:
        if _plan is not None and os.getpid() == 1:
            _enter_from_zygote(tmp_mb, str(settings["version_dir"]) if "overlay" not in without else None)
        else:
            _enter_from_image(request, settings, zygote, tmp_mb, without)
    _restrict(zygote, without)


def ahead_key(request: Mapping[str, Any]) -> str | None:
    """What a container's sandbox is made of, beyond its zygote's (the settings and its /tmp's
    size), as a key; None when a container forked ahead cannot enter it before its request comes:
    no sandbox, or a sandbox made of more than a sandboxed function zygote's container's steps."""
    if request.get("zygote") or _plan is None or not forks_pid_namespaces(request):
        return None
    return json.dumps([request["sandbox"], request.get("tmp_size_mb")], sort_keys=True)


def enter_ahead(request: Mapping[str, Any]) -> None:
    """In a container forked ahead of its request (`zygote.Zygote.park`, pid 1 of its own pid
    namespace): the sandbox a request like `request` asks for, so that the request, when it
    comes, finds the container ready but for its cgroup slot, output and environment. `enter`
    then checks that its request is alike (`ahead_key`) and only waits for the network."""
    global _ahead
    key = ahead_key(request)
    if key is None or os.getpid() != 1:
        return
    settings = request["sandbox"]
    _enter(request, settings, False, set(settings.get("without") or ()))
    _ahead = key


def _enter_from_image(request: Mapping[str, Any], settings: Mapping[str, Any], zygote: bool, tmp_mb: int,
                      without: set[str]) -> None:
    """A child of an image's zygote (root outside): namespaces of its own, a root built and
    pivoted into, pid 1 through one more fork. A function zygote then takes a user namespace of
    its own (`forks_pid_namespaces`), where it may make each container's pid namespace."""
    global _plan, _pid_namespaces
    uid, gid = os.getuid(), os.getgid()
    prctl(PR_SET_DUMPABLE, 1)  # the uid drop left /proc/self root's; the maps are written there
    unshare(NAMESPACES)
    # Fork at once: the first child stays outside the pid namespace and waits, and every page the
    # setup below writes is the second's alone, not kept alive in the first.
    child = os.fork()
    if child:
        drop_capabilities()
        _restrict(zygote, without)
        _stay_behind(child)
    prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP if zygote else signal.SIGKILL))
    map_ids(uid, gid)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    read_only = read_only_paths(_system(), [*_python_paths(), str(request.get("cwd") or "/")],
                                settings.get("hidden") or ())
    devices = gpu_nodes(json.loads(str(request.get("start") or "{}")).get("gpu_devices") or (), os.path.exists)
    plan = root_plan(system=_system(), read_only=read_only, version_dir=str(settings["version_dir"]),
                     socket_dir=str(settings["socket_dir"]), tmp_mb=tmp_mb, devices=devices)
    build_root(plan)
    _plan = plan
    if not zygote:
        fresh_tmp(plan, tmp_mb, str(settings["version_dir"]) if "overlay" not in without else None)
    _libc.sethostname(b"wisp", 4)
    loopback_up()
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    drop_capabilities()
    if zygote:
        # Capabilities over nothing but the namespaces it makes from now on: enough to give each
        # container a pid namespace of its own (`new_pid_namespace`), nothing over this root.
        inside_uid, inside_gid = os.getuid(), os.getgid()  # as the namespace made above knows them
        unshare(CLONE_NEWUSER)
        map_ids(inside_uid, inside_gid)
        _pid_namespaces = True


def _enter_from_zygote(tmp_mb: int, home: str | None) -> None:
    """A container forked from a sandboxed function zygote, which made it pid 1 of a new pid
    namespace: its mount, net, ipc and uts namespaces made with the zygote's capabilities (so
    that it can mount its own /proc), then a user namespace of its own, without capabilities."""
    assert _plan is not None
    uid, gid = os.getuid(), os.getgid()
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    fresh_tmp(_plan, tmp_mb, home)
    _libc.sethostname(b"wisp", 4)
    loopback_up()
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    prctl(PR_SET_DUMPABLE, 1)
    unshare(CLONE_NEWUSER)
    map_ids(uid, gid)
    drop_capabilities()


def has_default_route(routes: str) -> bool:
    """Whether /proc/net/route's text has a default route (destination 00000000)."""
    return any(line.split()[1:2] == ["00000000"] for line in routes.splitlines()[1:])


def await_network(timeout: float = NETWORK_TIMEOUT) -> None:
    """A container of a function with `network=`: the server gives its namespace a veth and a
    default route from outside (`wisp.server.runtime.egress`); no user code runs before it is
    there. Past `timeout`, it goes on with loopback only and says so (the server's log says why)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), open("/proc/net/route") as routes:
            if has_default_route(routes.read()):
                return
        time.sleep(0.002)
    print(f"[wisp] sandbox: no network after {timeout:.0f} s; this container has loopback only",
          file=sys.stderr, flush=True)


def forks_pid_namespaces(request: Mapping[str, Any]) -> bool:
    """Whether this zygote gives the child `request` asks for a pid namespace of its own."""
    settings = request.get("sandbox")
    if not _pid_namespaces or not settings:
        return False
    return "namespaces" not in (settings.get("without") or ())


def new_pid_namespace() -> None:
    """The next child forked is pid 1 of a new pid namespace (in a sandboxed function zygote)."""
    unshare(CLONE_NEWPID)


def _restrict(zygote: bool, without: set[str]) -> None:
    """Lowered rlimits, no_new_privs and the seccomp filter (a zygote's leaves its containers
    the calls that make their namespaces)."""
    for limit, values in lowered_limits({k: resource.getrlimit(k) for k in
                                         (resource.RLIMIT_CORE, resource.RLIMIT_NOFILE, resource.RLIMIT_MEMLOCK,
                                          resource.RLIMIT_NPROC)}).items():
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(limit, values)
    arch = machine_arch()
    if "seccomp" not in without and arch is not None:
        load_filter(program(arch, DENIED if zygote else (*DENIED, *CONTAINER_DENIED)))
    else:
        prctl(PR_SET_NO_NEW_PRIVS, 1)


# -- probing (at server start) -------------------------------------------------------------------

def _try(step: str, action: Any) -> str | None:
    try:
        action()
    except Exception as exc:
        return f"{step}: {exc}"
    return None


def probe() -> dict[str, str]:
    """Each mechanism tried in a forked child, as the sandbox would use it: piece -> why it is
    missing. Empty: the machine gives everything."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        missing: dict[str, str] = {}
        uid, gid = os.getuid(), os.getgid()

        def namespaces() -> None:
            unshare(NAMESPACES)
            map_ids(uid, gid)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m")
            loopback_up()

        def overlay() -> None:
            for name in ("l", "u", "w", "m"):
                os.mkdir(f"/tmp/{name}")
            mount("overlay", "/tmp/m", "overlay", 0, "lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w")

        def seccomp() -> None:
            arch = machine_arch()
            if arch is None:
                raise OSError(f"no syscall table for {platform.machine()}")
            load_filter(program(arch, (*DENIED, *CONTAINER_DENIED)))
            if _libc.unshare(CLONE_NEWUTS) == 0 or ctypes.get_errno() != errno.EPERM:
                raise OSError("the filter did not refuse unshare")

        for piece, action in (("namespaces", namespaces), ("overlay", overlay), ("seccomp", seccomp)):
            if piece == "overlay" and "namespaces" in missing:
                missing[piece] = "needs the namespaces"
                continue
            problem = _try(piece, action)
            if problem is not None:
                missing[piece] = problem
        os.write(write, json.dumps(missing).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    try:
        found = json.loads(data)
    except ValueError:
        return {"namespaces": "the probe died without an answer"}
    return {str(k): str(v) for k, v in found.items()}


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(probe()))

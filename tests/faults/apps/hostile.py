"""A container that attacks from inside the sandbox (tests/faults/test_sandbox.py judges what it got).

It tries to read the server's token, state and another app's code, to list the server's home,
to connect to the control API's port and to an address beyond loopback (10.255.255.1, which
nothing answers: the attempt must fail before any packet could leave), to ptrace the zygote it
was forked from, to mount, unshare, write /usr and load a kernel keyring; and it reports what it
is (pid, uid, hostname, capabilities, seccomp) and calls a function of its own app.
"""
import ctypes
import errno
import os
import socket

import wisp

app = wisp.App("sbx-hostile")
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16


def _read(path: str) -> str:
    try:
        if os.path.isdir(path):
            return "listed: " + ",".join(sorted(os.listdir(path)))
        with open(path, "rb") as f:
            return "read: " + f.read(100).decode(errors="replace")
    except OSError as exc:
        return type(exc).__name__


def _connect(host: str, port: int) -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect((host, port))
        return "connected"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    finally:
        sock.close()


def _errno_of(result: int) -> str:
    return "ok" if result == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def _status() -> dict[str, str]:
    with open("/proc/self/status") as status:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in status)
                if k in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp")}


def _write(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("x")
        return "written"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


@app.function()
def double(x: int) -> int:
    return 2 * x


@app.function()
@wisp.fastapi_endpoint()
def attack(home: str, other: str, admin_port: int, zygote: int) -> dict[str, object]:
    reads = {
        "token": _read(f"{home}/token"),
        "state_db": _read(f"{home}/state.db"),
        "server_json": _read(f"{home}/server.json"),
        "other_app": _read(f"{home}/apps/{other}"),
        "logs": _read(f"{home}/logs"),
        "home": _read(home),
        "apps": _read(f"{home}/apps"),
        "images": _read(f"{home}/images"),
    }
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "hostname": socket.gethostname(),
        "reads": reads,
        "control_api": _connect("127.0.0.1", admin_port),
        "outside": _connect("10.255.255.1", 80),
        "ptrace_zygote": _errno_of(libc.ptrace(PTRACE_ATTACH, zygote, 0, 0)),
        "mount": _errno_of(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        "unshare": _errno_of(libc.unshare(0x10000000)),
        "keyring": _errno_of(libc.syscall(250, 0, 0, 0, 0, 0)),  # keyctl on x86_64
        "write_usr": _write("/usr/wisp-was-here"),
        "write_tmp": _write("/tmp/mine"),
        "write_home": _write(os.path.join(os.environ["HOME"], "written-in-the-sandbox")),
        "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "status": _status(),
        "env": sorted(os.environ),
        "call": double.remote(21),
    }

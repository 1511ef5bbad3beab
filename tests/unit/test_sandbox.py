"""The sandbox's pure parts (issue 15, point 1): the seccomp program, the mount plan, the rlimits,
the lines the server prints for what the kernel refuses, and what `--runtime auto` picks."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import resource

import pytest

from wisp._runtime import sandbox as sb
from wisp.server.runtime.sandbox import WITHOUT_ENV, auto_choice, missing_lines, turned_off

ALLOW = sb.SECCOMP_RET_ALLOW
EPERM = sb.SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = sb.SECCOMP_RET_ERRNO | errno.ENOSYS
KILL = sb.SECCOMP_RET_KILL_PROCESS
CONTAINER = (*sb.DENIED, *sb.CONTAINER_DENIED)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize(("call", "arg0", "denied", "expected"), [
    ("ptrace", 0, CONTAINER, EPERM),
    ("bpf", 0, CONTAINER, EPERM),
    ("keyctl", 0, CONTAINER, EPERM),
    ("setns", 0, CONTAINER, EPERM),
    ("pivot_root", 0, sb.DENIED, EPERM),  # a zygote's containers never pivot again
    ("mount", 0, CONTAINER, EPERM),
    ("unshare", 0, CONTAINER, EPERM),
    ("mount", 0, sb.DENIED, ALLOW),  # a zygote makes its containers' namespaces
    ("unshare", 0, sb.DENIED, ALLOW),
    ("clone", 0x11, CONTAINER, ALLOW),  # fork(): SIGCHLD, no namespace
    ("clone", 0x3D0F00, CONTAINER, ALLOW),  # a thread
    ("clone", sb.CLONE_NEWUSER | 0x11, CONTAINER, EPERM),
    ("clone", sb.CLONE_NEWNET, sb.DENIED, EPERM),
    ("clone3", 0, CONTAINER, ENOSYS),  # the C library falls back to clone
])
def test_the_filter_decides_each_call(arch: str, call: str, arg0: int, denied: tuple[str, ...], expected: int) -> None:
    code = sb.program(arch, denied)
    assert sb.run_filter(code, sb.SYSCALLS[arch][call], sb.AUDIT_ARCH[arch], arg0) == expected


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_other_calls_pass_and_other_architectures_die(arch: str) -> None:
    code = sb.program(arch, CONTAINER)
    denied = {sb.SYSCALLS[arch][name] for name in (*CONTAINER, "clone", "clone3") if name not in sb.ABSENT[arch]}
    for nr in range(460):
        if nr not in denied:
            assert sb.run_filter(code, nr, sb.AUDIT_ARCH[arch]) == ALLOW, nr
    assert sb.run_filter(code, 0, 0x40000003) == KILL  # i386 (int 0x80) on x86_64
    if arch == "x86_64":
        assert sb.run_filter(code, sb.X32_SYSCALL_BIT | 101, sb.AUDIT_ARCH[arch]) == KILL


def test_a_call_without_a_number_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no syscall number for nosuchcall on x86_64"):
        sb.program("x86_64", ["ptrace", "nosuchcall"])


@pytest.mark.skipif(ctypes.util.find_library("seccomp") is None, reason="libseccomp is not installed")
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_numbers_are_libseccomps(arch: str) -> None:
    """Our table against libseccomp's, which knows every architecture's numbers."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    for name, number in sb.SYSCALLS[arch].items():
        resolved = lib.seccomp_syscall_resolve_name_arch(sb.AUDIT_ARCH[arch], name.encode())
        if resolved >= 0:  # an older libseccomp may not know the newest calls
            assert resolved == number, name


SYSTEM = {"/usr": None, "/etc": None, "/bin": "usr/bin", "/lib": "usr/lib", "/lib64": "usr/lib64"}


@pytest.mark.parametrize(("paths", "hidden", "shown", "skipped"), [
    # an image's venv under the home is shown, the interpreter below /usr is covered already
    (["/srv/wisp/images/abc", "/usr/lib/python3.11", "/opt/wisp/src"], ["/srv/wisp"],
     ["/usr", "/etc", "/opt/wisp/src", "/srv/wisp/images/abc"], []),
    # a folder holding the home (a sys.path entry of "/" or "/srv") is never shown
    (["/", "/srv", "/srv/wisp/images/abc"], ["/srv/wisp"], ["/usr", "/etc", "/srv/wisp/images/abc"], ["/", "/srv"]),
    # nested paths: the outermost only
    (["/opt/py", "/opt/py/lib/site-packages", "/opt/py/"], [], ["/usr", "/etc", "/opt/py"], []),
    # the server's socket folder is hidden as well
    (["/tmp", "/tmp/wisp-1/u5"], ["/tmp/wisp-1"], ["/usr", "/etc"], ["/tmp", "/tmp/wisp-1/u5"][:1]),
])
def test_what_is_shown_read_only(paths: list[str], hidden: list[str], shown: list[str], skipped: list[str]) -> None:
    found: list[str] = []
    assert sb.read_only_paths(SYSTEM, paths, hidden, found)[:len(shown)] == shown
    assert found == skipped


def test_the_plan_mounts_parents_before_what_lies_below_them() -> None:
    plan = sb.root_plan(system=SYSTEM, read_only=["/usr", "/etc", "/tmp/home/images/abc"],
                        version_dir="/tmp/home/apps/a/v1", socket_dir="/tmp/wisp-1/u5", tmp_mb=64)
    targets = [m.target for m in plan]
    for i, target in enumerate(targets):
        for parent in targets[i + 1:]:
            assert not target.startswith(parent.rstrip("/") + "/"), f"{target} comes before its parent {parent}"
    by_target = {m.target: m for m in plan}
    assert by_target["/tmp"] == sb.Mount("tmpfs", "/tmp", size_mb=64)
    assert by_target["/tmp/wisp-1/u5"].writable and not by_target["/tmp/home/apps/a/v1"].writable
    assert by_target["/bin"] == sb.Mount("symlink", "/bin", "usr/bin")
    assert not any(m.writable for m in plan if m.kind == "bind" and m.target not in ("/tmp/wisp-1/u5", "/proc"))
    assert sb.rebound_under(plan, "/tmp") == [by_target["/tmp/wisp-1/u5"], by_target["/tmp/home/images/abc"],
                                              by_target["/tmp/home/apps/a/v1"]]



HERE = {"/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"}  # a machine's nodes, faked


@pytest.mark.parametrize(("devices", "nodes"), [
    ((), []),  # no GPU: not even the driver's shared nodes
    (("/dev/nvidia1",), ["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"]),  # only its own, never nvidia0
    (("/dev/nvidia0", "/dev/nvidia1"), ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"]),
    (("/dev/nvidia7",), ["/dev/nvidiactl", "/dev/nvidia-uvm"]),  # a node the machine lacks is not made up
])
def test_a_container_gets_the_nodes_of_its_own_gpus_and_the_drivers(devices: tuple[str, ...], nodes: list[str]) -> None:
    assert sb.gpu_nodes(devices, HERE.__contains__) == nodes


@pytest.mark.parametrize("wrong", ["/dev/sda", "/dev/nvidiactl", "/dev/nvidia0/../sda", "/etc/shadow"])
def test_only_a_gpus_node_is_bound(wrong: str) -> None:
    with pytest.raises(ValueError, match=f"not a GPU's device node: {wrong}"):
        sb.gpu_nodes(("/dev/nvidia0", wrong), HERE.__contains__)


def test_the_gpu_nodes_are_bound_below_the_sandboxs_own_dev() -> None:
    nodes = sb.gpu_nodes(("/dev/nvidia1",), HERE.__contains__)
    plan = sb.root_plan(system=SYSTEM, read_only=["/usr"], version_dir="/tmp/home/apps/a/v1",
                        socket_dir="/tmp/wisp-1/u5", tmp_mb=64, devices=nodes)
    targets = [m.target for m in plan]
    for node in nodes:
        assert sb.Mount("dev", node, node) in plan
        assert targets.index("/dev") < targets.index(node)  # on the tmpfs, not under it
    assert not any(m.target == "/dev/nvidia0" for m in plan)
    assert not any("nvidia" in m.target for m in sb.root_plan(system=SYSTEM, read_only=["/usr"], version_dir="/v",
                                                              socket_dir="/s", tmp_mb=64))


INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(("current", "expected"), [
    ({}, {resource.RLIMIT_CORE: (0, 0), resource.RLIMIT_NOFILE: (65536, 65536),
          resource.RLIMIT_MEMLOCK: (64 << 20, 64 << 20), resource.RLIMIT_NPROC: (4096, 4096)}),
    ({resource.RLIMIT_NOFILE: (1024, 1048576), resource.RLIMIT_NPROC: (100, 200)},
     {resource.RLIMIT_NOFILE: (1024, 65536), resource.RLIMIT_NPROC: (100, 200)}),
    ({resource.RLIMIT_MEMLOCK: (INF, 8 << 20)}, {resource.RLIMIT_MEMLOCK: (8 << 20, 8 << 20)}),
])
def test_limits_are_only_ever_lowered(current: dict[int, tuple[int, int]], expected: dict[int, tuple[int, int]]) -> None:
    lowered = sb.lowered_limits(current)
    assert {k: lowered[k] for k in expected} == expected


SETTINGS = {"without": [], "hidden": ["/srv/wisp"], "version_dir": "/srv/wisp/apps/a/v1", "socket_dir": "/run/a"}


@pytest.mark.parametrize(("request_", "in_zygote", "keyed"), [
    ({"sandbox": SETTINGS, "tmp_size_mb": 512}, True, True),
    ({"sandbox": SETTINGS}, True, True),
    ({"sandbox": SETTINGS, "tmp_size_mb": 512}, False, False),  # not a sandboxed function zygote's child
    ({"sandbox": SETTINGS, "zygote": "/run/a/z.sock"}, True, False),  # a zygote is never forked ahead
    ({"sandbox": None, "tmp_size_mb": 512}, True, False),
    ({}, True, False),
])
def test_what_a_container_forked_ahead_may_enter(monkeypatch: pytest.MonkeyPatch, request_: dict[str, object],
                                                 in_zygote: bool, keyed: bool) -> None:
    monkeypatch.setattr(sb, "_plan", [] if in_zygote else None)
    monkeypatch.setattr(sb, "_pid_namespaces", in_zygote)
    assert (sb.ahead_key(request_) is not None) == keyed


def test_the_key_tells_the_settings_and_the_size_of_tmp_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sb, "_plan", [])
    monkeypatch.setattr(sb, "_pid_namespaces", True)
    keys = {sb.ahead_key({"sandbox": SETTINGS, "tmp_size_mb": 512}), sb.ahead_key({"sandbox": SETTINGS, "tmp_size_mb": 64}),
            sb.ahead_key({"sandbox": {**SETTINGS, "version_dir": "/srv/wisp/apps/a/v2"}, "tmp_size_mb": 512}),
            sb.ahead_key({"sandbox": {**SETTINGS, "without": ["overlay"]}, "tmp_size_mb": 512})}
    assert len(keys) == 4
    assert sb.ahead_key({"tmp_size_mb": 64, "sandbox": dict(reversed(SETTINGS.items()))}) in keys


def test_a_container_entered_ahead_refuses_a_request_with_other_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sb, "_plan", [])
    monkeypatch.setattr(sb, "_pid_namespaces", True)
    monkeypatch.setattr(sb, "_ahead", sb.ahead_key({"sandbox": SETTINGS, "tmp_size_mb": 512}))
    sb.enter({"sandbox": SETTINGS, "tmp_size_mb": 512, "env": {}})  # alike: nothing more to do
    with pytest.raises(RuntimeError, match="entered ahead with other settings"):
        sb.enter({"sandbox": SETTINGS, "tmp_size_mb": 64, "env": {}})


def test_each_missing_mechanism_is_one_line() -> None:
    lines = missing_lines({"seccomp": "Invalid argument", "namespaces": "unshare: Operation not permitted"})
    assert lines == [
        "wisp server: sandbox: containers share the server's namespaces and see its whole filesystem (user, mount, "
        "pid, net, ipc and uts namespaces unavailable) (unshare: Operation not permitted)",
        "wisp server: sandbox: containers run without the seccomp deny-list (Invalid argument)",
    ]
    assert missing_lines({}) == []


NO_NAMESPACES = "containers share the server's namespaces and see its whole filesystem (user, mount, pid, net, ipc " \
                "and uts namespaces unavailable)"
FALLBACK = "wisp server: runtime auto: running the zygote runtime without the sandbox (forks with the app's uid; " \
           "docs/security.md says what that leaves open)"


@pytest.mark.parametrize(("can_fork", "missing", "runtime", "lines"), [
    (True, {}, "sandbox", []),
    # The sandbox itself says what it runs without (missing_lines): auto adds nothing.
    (True, {"seccomp": "Invalid argument"}, "sandbox", []),
    (True, {"overlay": "mount: Operation not permitted"}, "sandbox", []),
    (True, {"namespaces": "unshare: Operation not permitted", "overlay": "needs the namespaces"}, "zygote", [
        f"wisp server: runtime auto: no sandbox: {NO_NAMESPACES} (unshare: Operation not permitted)",
        "wisp server: runtime auto: no sandbox: a container's version folder is read-only to it (no overlay in a "
        "user namespace) (needs the namespaces)",
        FALLBACK]),
    (True, {"namespaces": "turned off by WISP_SANDBOX_WITHOUT", "seccomp": "turned off by WISP_SANDBOX_WITHOUT"},
     "zygote", [f"wisp server: runtime auto: no sandbox: {NO_NAMESPACES} (turned off by WISP_SANDBOX_WITHOUT)",
                "wisp server: runtime auto: no sandbox: containers run without the seccomp deny-list (turned off by "
                "WISP_SANDBOX_WITHOUT)",
                FALLBACK]),
    (False, {}, "local", ["wisp server: runtime auto: this platform cannot fork with descriptors: containers are "
                          "fresh interpreters, without a sandbox"]),
])
def test_auto_picks_the_sandbox_where_its_namespaces_are(can_fork: bool, missing: dict[str, str], runtime: str,
                                                         lines: list[str]) -> None:
    assert auto_choice(can_fork, missing) == (runtime, lines)


@pytest.mark.parametrize(("value", "off"), [
    ("", {}),
    ("seccomp", {"seccomp": f"turned off by {WITHOUT_ENV}"}),
    (" namespaces , overlay,", {"namespaces": f"turned off by {WITHOUT_ENV}", "overlay": f"turned off by {WITHOUT_ENV}"}),
])
def test_pieces_turned_off_read_as_missing(value: str, off: dict[str, str]) -> None:
    assert turned_off(value) == off


def test_a_piece_the_sandbox_lacks_is_refused_with_the_ones_it_has() -> None:
    with pytest.raises(ValueError) as caught:
        turned_off("seccomp,network")
    assert str(caught.value) == (f"{WITHOUT_ENV} names network, which the sandbox does not have: name some of "
                                 "namespaces, overlay, seccomp, comma-separated, or leave it unset.")

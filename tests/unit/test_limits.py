"""Enforced limits, the pure part (issue 15, point 2): which cgroups, which limits, which files
with which values, for cgroup v1 and v2. The e2e side is tests/faults/test_limits.py."""
from __future__ import annotations

import os

import pytest

import wisp
from wisp.server.runtime.limits import (
    Base,
    Chown,
    Defaults,
    Hierarchy,
    Limits,
    Mkdir,
    Write,
    app_plan,
    base_of,
    base_weight,
    defaults_from_env,
    find_hierarchy,
    limits_for,
    missing_lines,
    oom_kills,
    out_of_memory,
    setup_plan,
    slot_plan,
)
from wisp.server.runtime.slots import Slots

# This machine: v1 controllers, an empty v2 at /sys/fs/cgroup/unified, a nested memory cgroup.
HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_OWN = "8:pids:/\n4:memory:/process_api/c4d5\n2:cpuacct:/\n1:cpu:/\n0::/\n"
# Debian's and Fedora's systemd (cgroup2 only), the server as a service.
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_OWN = "0::/system.slice/wisp.service\n"
# Docker with v1: the cgroup mounts show the container's own subtree as their root.
DOCKER_MOUNTS = """\
700 690 0:40 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
701 690 0:41 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
702 690 0:42 /docker/abc /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids
"""
DOCKER_OWN = "12:pids:/docker/abc\n6:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc/inner\n"


@pytest.mark.parametrize(("mounts", "own", "v2_controllers", "version", "folders", "missing"), [
    (HYBRID_MOUNTS, HYBRID_OWN, None, 1,
     {"memory": "/sys/fs/cgroup/memory/process_api/c4d5", "pids": "/sys/fs/cgroup/pids", "cpu": "/sys/fs/cgroup/cpu"},
     set()),
    (V2_MOUNTS, V2_OWN, "cpuset cpu io memory pids", 2,
     {c: "/sys/fs/cgroup/system.slice/wisp.service" for c in ("memory", "pids", "cpu")}, set()),
    (V2_MOUNTS, V2_OWN, "memory", 2, {"memory": "/sys/fs/cgroup/system.slice/wisp.service"}, {"pids", "cpu"}),
    (DOCKER_MOUNTS, DOCKER_OWN, None, 1,
     {"memory": "/sys/fs/cgroup/memory/inner", "pids": "/sys/fs/cgroup/pids", "cpu": "/sys/fs/cgroup/cpu,cpuacct"},
     set()),
    (HYBRID_MOUNTS.replace("rw,pids", "rw,freezer"), HYBRID_OWN, None, 1,
     {"memory": "/sys/fs/cgroup/memory/process_api/c4d5", "cpu": "/sys/fs/cgroup/cpu"}, {"pids"}),
    ("25 1 8:1 / / rw - ext4 /dev/sda rw\n", "", None, 0, {}, {"memory", "pids", "cpu"}),
], ids=["hybrid-v1", "v2-service", "v2-memory-only", "docker-v1", "v1-no-pids", "none"])
def test_which_controllers_are_used(mounts: str, own: str, v2_controllers: str | None, version: int,
                                    folders: dict[str, str], missing: set[str]) -> None:
    found = find_hierarchy(mounts, own, v2_controllers)
    assert (found.version, dict(found.folders), set(found.missing)) == (version, folders, missing)


def test_each_missing_piece_is_one_line_saying_what_it_costs() -> None:
    lines = missing_lines(find_hierarchy(HYBRID_MOUNTS.replace("rw,pids", "rw,freezer"), HYBRID_OWN))
    assert lines == ["limits: no pids controller in the cgroup v1 hierarchy: containers run without a pids limit "
                     "(a fork bomb is not stopped)"]
    assert len(missing_lines(find_hierarchy("", ""))) == 3


DEFAULTS = Defaults()  # 1024 MiB, 1 core, 512 pids, 512 MiB of /tmp


@pytest.mark.parametrize(("cpu", "cpu_limit", "memory", "memory_limit", "disk", "cores", "machine_mb", "expected"), [
    # a default webhook: Modal's reservations, wisp's ceilings
    (None, None, None, None, None, 2, 24_000, Limits(1024, 512, 0.125, 1.0, 512)),
    # memory= below the default ceiling keeps the ceiling; above it, memory= is the limit
    (None, None, 256, None, None, 2, 24_000, Limits(1024, 512, 0.125, 1.0, 512)),
    (None, None, 4096, None, None, 2, 24_000, Limits(4096, 512, 0.125, 1.0, 512)),
    # Modal's (request, limit) tuples are the limits themselves
    (0.25, 0.5, 64, 160, None, 2, 24_000, Limits(160, 512, 0.25, 0.5, 512)),
    # a small machine: no single container gets more than half its memory by default
    (None, None, None, None, None, 2, 1000, Limits(500, 512, 0.125, 1.0, 512)),
    # a ceiling of the whole machine or more is no ceiling (no quota written)
    (2.0, None, None, None, None, 2, 24_000, Limits(1024, 512, 2.0, None, 512)),
    (None, None, None, None, None, 1, 24_000, Limits(1024, 512, 0.125, None, 512)),
    # ephemeral_disk= sizes /tmp
    (None, None, None, None, 2048, 2, 24_000, Limits(1024, 512, 0.125, 1.0, 2048)),
    # the machine's memory unknown: the configured ceiling
    (None, None, None, None, None, 2, 0, Limits(1024, 512, 0.125, 1.0, 512)),
])
def test_limits_of_a_function(cpu: float | None, cpu_limit: float | None, memory: int | None,
                              memory_limit: int | None, disk: int | None, cores: float, machine_mb: int,
                              expected: Limits) -> None:
    assert limits_for(cpu, cpu_limit, memory, memory_limit, disk, DEFAULTS, cores, machine_mb) == expected


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, Defaults(1024, 1.0, 512, 512)),
    ({"WISP_MEMORY_LIMIT_MB": "2048", "WISP_CPU_CEILING": "0.5", "WISP_PIDS_LIMIT": "64", "WISP_TMP_SIZE_MB": "100"},
     Defaults(2048, 0.5, 64, 100)),
    ({"WISP_PIDS_LIMIT": ""}, Defaults()),
])
def test_defaults_from_the_environment(environ: dict[str, str], expected: Defaults) -> None:
    assert defaults_from_env(environ) == expected


@pytest.mark.parametrize("environ", [{"WISP_PIDS_LIMIT": "0"}, {"WISP_MEMORY_LIMIT_MB": "1.5"},
                                     {"WISP_CPU_CEILING": "lots"}])
def test_a_bad_default_names_its_variable(environ: dict[str, str]) -> None:
    name = next(iter(environ))
    with pytest.raises(ValueError, match=rf"^{name}=.* above 0; give one, or unset it"):
        defaults_from_env(environ)


V1 = Base(1, {"memory": "/m/wisp-7", "pids": "/p/wisp-7", "cpu": "/c/wisp-7"})
V2 = Base(2, {c: "/sys/fs/cgroup/svc/wisp-7" for c in ("memory", "pids", "cpu")})
LIMITS = Limits(memory_mb=160, pids=100, cpu=0.25, cpu_ceiling=0.5, tmp_size_mb=512)


def test_a_v1_slot_writes_each_controllers_files_and_is_joinable_by_the_app() -> None:
    plan = slot_plan(V1, "c3", LIMITS, (2000, 2000))
    assert plan.steps == (
        Mkdir("/m/wisp-7/c3"),
        Write("/m/wisp-7/c3/memory.limit_in_bytes", str(160 << 20)),
        Write("/m/wisp-7/c3/memory.memsw.limit_in_bytes", str(160 << 20), optional=True),
        Chown("/m/wisp-7/c3/tasks", 2000, 2000),
        Mkdir("/p/wisp-7/c3"),
        Write("/p/wisp-7/c3/pids.max", "100"),
        Chown("/p/wisp-7/c3/tasks", 2000, 2000),
        Mkdir("/c/wisp-7/c3"),
        Write("/c/wisp-7/c3/cpu.shares", "256"),
        Write("/c/wisp-7/c3/cpu.cfs_period_us", "100000"),
        Write("/c/wisp-7/c3/cpu.cfs_quota_us", "50000"),
        Chown("/c/wisp-7/c3/tasks", 2000, 2000),
    )
    # the child moves its one thread (v1 `tasks`): no global lock, no RCU grace period on the cold start
    assert plan.procs == ("/m/wisp-7/c3/tasks", "/p/wisp-7/c3/tasks", "/c/wisp-7/c3/tasks")
    assert plan.oom_file == "/m/wisp-7/c3/memory.oom_control"


def test_a_v2_slot_lies_below_its_apps_delegated_folder() -> None:
    plan = slot_plan(V2, "c3", LIMITS, (2000, 2000))
    slot = "/sys/fs/cgroup/svc/wisp-7/app-2000/c3"
    assert plan.steps == (
        Mkdir(slot),
        Write(f"{slot}/memory.max", str(160 << 20)),
        Write(f"{slot}/memory.swap.max", "0", optional=True),
        Write(f"{slot}/pids.max", "100"),
        Write(f"{slot}/cpu.weight", "25"),
        Write(f"{slot}/cpu.max", "50000 100000"),
        Chown(f"{slot}/cgroup.procs", 2000, 2000),
    )
    assert (plan.folders, plan.procs, plan.oom_file) == ((slot,), (f"{slot}/cgroup.procs",), f"{slot}/memory.events")
    # the common ancestor of the app's slots: writable by the app, so it may move itself between them
    assert app_plan(V2, (2000, 2000)) == [
        Mkdir("/sys/fs/cgroup/svc/wisp-7/app-2000"),
        Write("/sys/fs/cgroup/svc/wisp-7/app-2000/cgroup.subtree_control", "+memory +pids +cpu"),
        Chown("/sys/fs/cgroup/svc/wisp-7/app-2000/cgroup.procs", 2000, 2000),
    ]
    assert app_plan(V1, (2000, 2000)) == []


@pytest.mark.parametrize(("base", "quota_file", "no_quota"), [
    (V1, "/c/wisp-7/z1/cpu.cfs_quota_us", "-1"),
    (V2, "/sys/fs/cgroup/svc/wisp-7/app-server/z1/cpu.max", "max 100000"),
])
def test_no_ceiling_and_a_root_joiner(base: Base, quota_file: str, no_quota: str) -> None:
    """A function zygote joins while still root: nothing to chown; no ceiling: an unlimited quota."""
    plan = slot_plan(base, "z1", Limits(1024, 512, 2.0, None, 512), None)
    assert Write(quota_file, no_quota) in plan.steps
    assert not any(isinstance(step, Chown) for step in plan.steps)


def test_a_slot_has_only_the_controllers_there_are() -> None:
    plan = slot_plan(Base(1, {"memory": "/m/w"}), "c1", LIMITS, None)
    assert [type(s).__name__ for s in plan.steps] == ["Mkdir", "Write", "Write"]
    v2 = slot_plan(Base(2, {"pids": "/g/w"}), "c1", LIMITS, None)
    assert v2.oom_file is None and [s.path for s in v2.steps] == ["/g/w/app-server/c1", "/g/w/app-server/c1/pids.max"]


def test_setup_v1_makes_a_folder_per_controller() -> None:
    hierarchy = find_hierarchy(HYBRID_MOUNTS, HYBRID_OWN)
    base = base_of(hierarchy, "wisp-7")
    assert setup_plan(hierarchy, base, 7, 2) == [Mkdir("/sys/fs/cgroup/memory/process_api/c4d5/wisp-7"),
                                                 Mkdir("/sys/fs/cgroup/pids/wisp-7"), Mkdir("/sys/fs/cgroup/cpu/wisp-7"),
                                                 Write("/sys/fs/cgroup/cpu/wisp-7/cpu.shares", "16384")]
    no_cpu = Base(1, {"memory": "/sys/fs/cgroup/memory/wisp-7"})
    assert setup_plan(hierarchy, no_cpu, 7, 2) == [Mkdir("/sys/fs/cgroup/memory/wisp-7")]


@pytest.mark.parametrize(("version", "cores", "weight"), [
    (1, 2, 16_384),  # the 16 default containers (cpu=0.125) 2 cores fit, as 16 plain processes
    (1, 1, 8_192),
    (1, 0.1, 1_024),  # never less than one plain process
    (1, 64, 262_144),  # the kernel's most
    (2, 2, 1_600),
    (2, 4, 3_200),
    (2, 64, 10_000),
])
def test_the_slots_folder_weighs_as_the_default_containers_the_machine_fits(version: int, cores: float,
                                                                            weight: int) -> None:
    assert base_weight(version, cores) == weight


def test_setup_v2_moves_the_server_into_a_leaf_first() -> None:
    """v2: only a cgroup without processes hands its controllers to children (the root excepted)."""
    hierarchy = find_hierarchy(V2_MOUNTS, V2_OWN, "memory pids cpu")
    own = "/sys/fs/cgroup/system.slice/wisp.service"
    assert setup_plan(hierarchy, base_of(hierarchy, "wisp-7"), 7, 4) == [
        Mkdir(f"{own}/wisp-server"), Write(f"{own}/wisp-server/cgroup.procs", "7"),
        Write(f"{own}/cgroup.subtree_control", "+memory +pids +cpu"), Mkdir(f"{own}/wisp-7"),
        Write(f"{own}/wisp-7/cgroup.subtree_control", "+memory +pids +cpu"), Write(f"{own}/wisp-7/cpu.weight", "3200")]
    root = find_hierarchy(V2_MOUNTS, "0::/\n", "memory pids")
    assert setup_plan(root, base_of(root, "wisp-7"), 7, 4) == [
        Write("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids"), Mkdir("/sys/fs/cgroup/wisp-7"),
        Write("/sys/fs/cgroup/wisp-7/cgroup.subtree_control", "+memory +pids")]
    assert setup_plan(Hierarchy(0, {}, {}), Base(0, {}), 7, 4) == []


@pytest.mark.parametrize(("text", "kills"), [
    ("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", 1),  # v1 memory.oom_control
    ("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n", 2),  # v2 memory.events
    ("oom_kill_disable 0\nunder_oom 0\n", 0),  # a kernel older than 4.13
    ("", 0),
])
def test_out_of_memory_kills_are_read_from_the_slot(text: str, kills: int) -> None:
    assert oom_kills(text) == kills


def test_the_words_a_killed_container_gets() -> None:
    assert out_of_memory(160) == "out of memory (limit 160 MiB)"


@pytest.mark.parametrize(("kwargs", "fields"), [
    ({}, {"cpu": None, "cpu_limit": None, "memory": None, "memory_limit": None, "ephemeral_disk": None}),
    ({"cpu": 2, "memory": 512}, {"cpu": 2.0, "cpu_limit": None, "memory": 512, "memory_limit": None}),
    ({"cpu": (0.5, 1.5), "memory": (256, 1024)}, {"cpu": 0.5, "cpu_limit": 1.5, "memory": 256, "memory_limit": 1024}),
    ({"ephemeral_disk": 10240}, {"ephemeral_disk": 10240}),
    ({"memory": None, "cpu": None}, {"memory": None, "cpu": None}),
])
def test_the_decorator_records_requests_and_limits(kwargs: dict[str, object], fields: dict[str, object]) -> None:
    app = wisp.App("res")
    app.function(**kwargs)(lambda: None)
    spec = app.spec(default_name="res", module="m", stub_attr="app").functions[0]
    assert {key: getattr(spec, key) for key in fields} == fields


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"memory": (1024, 512)}, r"`memory`'s limit 512 is below its request 1024"),
    ({"memory": 1.5}, r"`memory` takes a number of MiB above 0.*memory=\(512, 1024\)"),
    ({"cpu": -1}, r"`cpu` takes a number of cores above 0"),
    ({"cpu": (1, 2, 3)}, r"`cpu` as a tuple is \(request, limit\)"),
    ({"ephemeral_disk": 0}, r"`ephemeral_disk` must be a whole number from 1"),
])
def test_bad_resources_are_refused_saying_how_to_write_them(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wisp.App("res").function(**kwargs)(lambda: None)


def test_a_server_without_cgroups_says_so_once_per_missing_piece_and_runs_without(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Real I/O on folders that are not cgroups: one it may not create in, and a missing controller."""
    unwritable = Hierarchy(1, {"memory": "/proc/wisp-no-such-cgroup"}, {"pids": "no pids controller in the cgroup "
                                                                                "v1 hierarchy"})
    slots = Slots.start(Defaults(), hierarchy=unwritable)
    said = capsys.readouterr().out.splitlines()
    assert said == [
        "wisp server: limits: no pids controller in the cgroup v1 hierarchy: containers run without a pids limit "
        "(a fork bomb is not stopped)",
        f"wisp server: limits: cannot create cgroups in /proc/wisp-no-such-cgroup/wisp-{os.getpid()} (No such file or "
        "directory): containers run without memory, pids and CPU limits; run the server as root, or in a cgroup "
        "delegated to its user",
    ]
    assert not slots.available
    supply = slots.supply(Limits(1024, 512, 0.125, 1.0, 512), None)
    supply.prepare()
    assert supply.take() is None and supply.for_zygote() is None  # containers start as before, unlimited

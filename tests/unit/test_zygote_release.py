"""Issue 16: which idle zygotes the memory bound releases (a table), the bound's setting, and which
functions share a function zygote."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wisp._protocol import STANDBY_NAME, Start
from wisp.server.isolation import AppUser
from wisp.server.runtime.release import MB, Held, bound_from_env, held_pss, pss, to_release
from wisp.server.runtime.zygote import sharing_key


def z(key: str, size_mb: float, last_used: float, busy: bool = False) -> Held:
    return Held(key, int(size_mb * MB), last_used, busy)


@pytest.mark.parametrize(
    ("held", "bound_mb", "released"),
    [
        ([], 0, []),  # nothing held
        ([z("a", 8, 1), z("b", 8, 2)], 16, []),  # exactly at the bound: nothing goes
        ([z("a", 8, 1), z("b", 8, 2)], 15, ["a"]),  # one over: the least recently used goes
        ([z("b", 8, 2), z("a", 8, 1)], 15, ["a"]),  # by last use, not by the order given
        ([z("a", 8, 3), z("b", 8, 1), z("c", 8, 2)], 8, ["b", "c"]),  # LRU order until the rest fits
        ([z("a", 8, 1), z("b", 8, 2)], 0, ["a", "b"]),  # a bound of 0 releases every idle one
        ([z("a", 8, 1, busy=True), z("b", 8, 2)], 0, ["b"]),  # never one that is busy ...
        ([z("a", 100, 1, busy=True), z("b", 8, 2)], 10, []),  # ... nor do busy ones count toward the bound
        ([z("small", 1, 1), z("big", 30, 2)], 10, ["small", "big"]),  # least recent first, even if small
        ([z("a", 8, 1), z("b", 8, 2, busy=True), z("c", 8, 3)], 8, ["a"]),
    ],
)
def test_the_least_recently_used_idle_zygotes_go_until_the_idle_ones_fit(
        held: list[Held], bound_mb: int, released: list[str]) -> None:
    assert to_release(held, bound_mb * MB) == released


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, 128 * MB),  # the documented default
        ({"WISP_ZYGOTE_MEMORY_MB": ""}, 128 * MB),
        ({"WISP_ZYGOTE_MEMORY_MB": "0"}, 0),
        ({"WISP_ZYGOTE_MEMORY_MB": "64"}, 64 * MB),
        ({"WISP_ZYGOTE_MEMORY_MB": "0.5"}, MB // 2),
    ],
)
def test_the_bound_comes_from_the_environment(environ: dict[str, str], expected: int) -> None:
    assert bound_from_env(environ) == expected


@pytest.mark.parametrize("raw", ["-1", "lots", "12MB"])
def test_a_bad_bound_says_what_to_set(raw: str) -> None:
    with pytest.raises(ValueError, match=r"WISP_ZYGOTE_MEMORY_MB=.* must be a number of megabytes"):
        bound_from_env({"WISP_ZYGOTE_MEMORY_MB": raw})


def key(function: str, env: dict[str, str], *, directory: str = "/apps/a/v1", python: str = "/img/bin/python",
        user: AppUser | None = None, per_function: bool = False) -> tuple[object, ...]:
    start = Start(directory=directory, module="app", stub="stub", function=function)
    return sharing_key(python, start, {**env, "WISP_FUNCTION": function}, Path(directory), user, per_function)


BASE = {"PATH": "/bin", "WISP_APP": "a"}


def test_functions_of_one_version_in_one_environment_share_a_zygote() -> None:
    assert key("one", BASE) == key("two", BASE)


@pytest.mark.parametrize(
    "other",
    [
        {"env": {**BASE, "TOKEN": "secret-of-two"}},  # secrets differ: never imported in another's environment
        {"env": BASE, "directory": "/apps/a/v2"},  # another version
        {"env": BASE, "python": "/other-img/bin/python"},  # another image
        {"env": BASE, "user": AppUser(2100000001, 2100000001, "/s")},  # another uid
    ],
)
def test_what_keeps_functions_apart(other: dict[str, object]) -> None:
    assert key("one", BASE) != key("two", **other)  # type: ignore[arg-type]


def test_the_private_switch_gives_each_function_its_own_zygote_as_before() -> None:
    """WISP_ZYGOTE_PER_FUNCTION=1, for the benchmark's baseline."""
    assert key("one", BASE, per_function=True) != key("two", BASE, per_function=True)
    assert key("one", BASE, per_function=True) == key("one", BASE, per_function=True)


def test_a_zygote_holds_its_pss_and_its_parked_containers() -> None:
    """An idle function zygote's container forked ahead shares its pages: the bound counts it with
    the zygote (`held_pss`), or it would see half of what the zygote costs. Other children (a
    container that runs) are not counted."""
    parked = f"open('/proc/self/comm', 'w').write({STANDBY_NAME!r}); import time; time.sleep(30)"
    parent = subprocess.Popen(["sh", "-c", f"{sys.executable} -c \"{parked}\" & sleep 30 & wait"])
    children: list[int] = []
    try:
        listed = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        names: dict[int, str] = {}
        for _ in range(1000):  # up to 10 s for both children, the one named
            children = [int(pid) for pid in listed.read_text().split()]
            names = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in children}
            if STANDBY_NAME in names.values() and len(names) == 2:
                break
            time.sleep(0.01)
        standby = next(pid for pid, name in names.items() if name == STANDBY_NAME)
        other = next(pid for pid in names if pid != standby)
        own, theirs, running = pss(parent.pid), pss(standby), pss(other)
        assert own and theirs and running
        assert abs(held_pss(parent.pid) - (own + theirs)) < min(theirs, running) / 2  # type: ignore[operator]
    finally:
        for child in children:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
    assert held_pss(parent.pid) is None  # gone

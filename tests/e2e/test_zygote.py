"""Containers forked from a zygote: their own environment, folder and module state (issue 6)."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from wisp.server.runtime import release

from .conftest import REPO, Wisp, get, processes_in_group, start_wisp, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wisp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    """A server of the zygote runtime: these tests are about its own mechanics, seen from the host
    (which process forked which, fresh interpreters as the server's children), which the sandbox
    hides by design: its containers are pid 1 of namespaces of their own, their parent out of view."""
    w = start_wisp(tmp_path_factory.mktemp("home"), {"WISP_RUNTIME": "zygote"})
    yield w
    w.run("server", "stop", check=False)


def test_forked_containers_are_separate_and_survive_a_sibling_crash(wisp: Wisp, tmp_path: Path) -> None:
    shutil.copy(REPO / "tests/e2e/apps/zygote_app.py", tmp_path / "zygote_app.py")
    wisp.run("deploy", str(tmp_path / "zygote_app.py"))
    url = wisp.url("zygote--inside", "/?hold=1")
    with ThreadPoolExecutor(2) as pool:
        first, second = [r.json() for r in pool.map(lambda _: requests.get(url, timeout=120), range(2))]
    assert first["pid"] != second["pid"]
    for body in (first, second):
        assert "wisp._runtime.zygote" in body["parent"]  # forked, not a fresh interpreter
        assert body["seen"] == [body["pid"]]  # fresh module state per container
        assert body["app"] == "zygote" and body["function"] == "inside"  # its own environment
        assert body["cwd"].endswith("/apps/zygote/v1")  # its version's folder
    zygote_pid = first["ppid"]

    assert get(wisp.url("zygote--crash")).status_code == 502  # a container of the same image dies
    os.kill(zygote_pid, 0)  # the zygote lives on
    again = get(wisp.url("zygote--inside")).json()
    assert again["pid"] in (first["pid"], second["pid"])  # the siblings still serve
    assert again["ppid"] == zygote_pid
    wisp.run("app", "stop", "zygote")


def _standby_of(zygote: int) -> int | None:
    """The container the function zygote `zygote` forked ahead, parked (named wisp-standby)."""
    return next(iter(release.parked(zygote)), None)


def test_the_next_container_is_forked_ahead_and_takes_the_next_cold_start(wisp: Wisp, tmp_path: Path) -> None:
    """After a start, a function zygote forks its next container ahead and parks it, outside the
    app's folder; the next container to start is that process. It goes with its zygote."""
    shutil.copy(REPO / "tests/e2e/apps/zygote_app.py", tmp_path / "zygote_app.py")
    wisp.run("deploy", str(tmp_path / "zygote_app.py"))
    url = wisp.url("zygote--inside", "/?hold=1")
    zygote = requests.get(url, timeout=120).json()["ppid"]
    wait_until(lambda: _standby_of(zygote) is not None, 30, message="a container forked ahead")
    standby = _standby_of(zygote)
    assert standby is not None
    assert os.readlink(f"/proc/{standby}/cwd") == "/"  # not counted among the app's containers
    with ThreadPoolExecutor(2) as pool:  # the first container takes one; the other needs a new one
        answers = [r.json() for r in pool.map(lambda _: requests.get(url, timeout=120), range(2))]
    assert standby in {a["pid"] for a in answers}
    taken = next(a for a in answers if a["pid"] == standby)
    assert taken["seen"] == [standby] and "/apps/zygote/v" in taken["cwd"]  # a container like any
    assert taken["app"] == "zygote" and taken["function"] == "inside"
    wait_until(lambda: _standby_of(zygote) not in (None, standby), 30, message="the next one forked ahead")
    wisp.run("app", "stop", "zygote")
    wait_until(lambda: _standby_of(zygote) is None and _state(zygote) in ("gone", "Z"), 30,
               message="the zygote and its parked container to exit")


def _zygotes(folder: str) -> dict[int, int]:
    """pid -> parent pid of the function zygotes of the app version in `folder`.

    Forked processes keep the image zygote's command line; those in the version's folder are its
    function zygotes and their containers, and a container's parent is one of the former."""
    forked = {}
    for line in processes_in_group(folder):
        pid, _, argv = line.split(" ", 2)
        if "wisp._runtime.zygote" in argv:
            forked[int(pid)] = _ppid(int(pid))
    return {pid: parent for pid, parent in forked.items() if parent not in forked}


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _log(wisp: Wisp, app: str) -> str:
    return (wisp.home / "logs" / f"{app}.log").read_text()


def test_a_deploy_returns_with_the_function_zygote_ready_and_fork_false_opts_out(wisp: Wisp, tmp_path: Path) -> None:
    shutil.copy(REPO / "tests/e2e/apps/zygote_more.py", tmp_path / "zygote_more.py")
    wisp.run("deploy", str(tmp_path / "zygote_more.py"))
    folder = f"{wisp.home}/apps/zygote-more/v1/"
    ready = _zygotes(folder)  # before any request: prepared at deploy
    assert len(ready) == 1, ready  # `forked` has one; `fresh` asked for none
    (function_zygote, image_zygote), = ready.items()
    assert "wisp._runtime.zygote" in Path(f"/proc/{image_zygote}/cmdline").read_text()
    assert "[forked zygote] importing zygote_more" in _log(wisp, "zygote-more")  # the import's output

    forked = get(wisp.url("zygote-more--forked")).json()
    assert forked["ppid"] == function_zygote
    fresh = get(wisp.url("zygote-more--fresh")).json()
    assert fresh["ppid"] == wisp.server_pid()
    assert "wisp._runtime --dir" in fresh["parent"] or "wisp.server" in fresh["parent"]
    assert forked["signals"] == fresh["signals"]  # e.g. SIGPIPE ignored: a closed socket must not kill it
    log = _log(wisp, "zygote-more")
    assert "started as a fresh process: the function asks for one (fork=False)" in log
    assert log.count("importing zygote_more") == 2  # the zygote's import and the fresh container's

    wisp.run("app", "stop", "zygote-more")
    wait_until(lambda: not _zygotes(folder), message="the function zygote to exit with its app")


def test_a_script_that_starts_threads_at_import_gets_fresh_processes_with_the_reason(wisp: Wisp, tmp_path: Path) -> None:
    shutil.copy(REPO / "tests/e2e/apps/zygote_threads.py", tmp_path / "zygote_threads.py")
    wisp.run("deploy", str(tmp_path / "zygote_threads.py"))
    first, second = (get(wisp.url("zygote-threads--where")).json() for _ in range(2))
    assert first["ppid"] == wisp.server_pid()  # a fresh interpreter, the server's own child
    assert first["pid"] == second["pid"]  # and it serves as any container does
    log = _log(wisp, "zygote-threads")
    assert "started as a fresh process, not forked: importing the script left 1 thread(s) running (metrics-poller)" in log
    assert not _zygotes(f"{wisp.home}/apps/zygote-threads/v1/")
    wisp.run("app", "stop", "zygote-threads")


def test_a_script_that_fails_to_import_in_its_container_fails_its_deploy_with_the_error(wisp: Wisp, tmp_path: Path) -> None:
    shutil.copy(REPO / "tests/e2e/apps/zygote_broken.py", tmp_path / "zygote_broken.py")
    failed = wisp.run("deploy", str(tmp_path / "zygote_broken.py"), check=False)
    assert failed.returncode == 1
    assert "Version 1 of zygote-broken did not become ready, so it was not switched in" in failed.stderr
    assert "RuntimeError: DATABASE_URL is not set on this server" in failed.stderr  # the container's traceback
    assert get(wisp.url("zygote-broken--answer")).status_code == 404  # nothing was routed
    log = _log(wisp, "zygote-broken")
    assert "could not import the script ahead of its containers" in log  # the fallback was tried
    assert "[answer c" in log and "RuntimeError: DATABASE_URL is not set" in log  # by a container of its own
    assert not processes_in_group(f"{wisp.home}/apps/zygote-broken/v1")


@pytest.fixture
def wisp_of_a_copy(tmp_path: Path) -> Iterator[Wisp]:
    """A zygote-runtime server of the test's own (see `wisp`), its CLI, zygotes and containers
    running a copy of wisp's code, so that editing it leaves alone every other server on the
    machine (another pytest-xdist worker's)."""
    code = Path(tempfile.mkdtemp(prefix="wisp-code-copy-"))
    os.chmod(code, 0o755)  # containers run as their app's uid
    try:
        shutil.copytree(REPO / "src" / "wisp", code / "wisp", ignore=shutil.ignore_patterns("__pycache__"))
        server = start_wisp(tmp_path / "home", {"PYTHONPATH": str(code), "WISP_RUNTIME": "zygote"})
        try:
            yield server
        finally:
            server.run("server", "stop", check=False)
    finally:
        shutil.rmtree(code, ignore_errors=True)


def test_zygotes_are_replaced_when_wisps_code_changes(wisp_of_a_copy: Wisp, tmp_path: Path) -> None:
    own_wisp = wisp_of_a_copy
    shutil.copy(REPO / "tests/e2e/apps/zygote_app.py", tmp_path / "zygote_app.py")
    own_wisp.run("deploy", str(tmp_path / "zygote_app.py"))
    folder = f"{own_wisp.home}/apps/zygote/v1/"
    old = get(own_wisp.url("zygote--inside")).json()
    old_function_zygote = old["ppid"]
    old_image_zygote = _ppid(old_function_zygote)

    earlier = _zygotes(folder)  # the one function zygote of `inside` and `crash`
    assert list(earlier) == [old_function_zygote]

    changed = Path(own_wisp.env["PYTHONPATH"]) / "wisp/_runtime/_pipe.py"  # as after `git pull` or an edit
    before = changed.stat()
    try:
        os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        renewed = wait_until(lambda: len(set(_zygotes(folder)) - set(earlier)) == 1 and _zygotes(folder),
                             message="new function zygotes, started before any container needs them")
    finally:
        os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    new_image_zygotes = {parent for pid, parent in renewed.items() if pid not in earlier}
    assert len(new_image_zygotes) == 1 and old_image_zygote not in new_image_zygotes  # a new image zygote too
    os.kill(old_function_zygote, 0)  # the old one lives while the container it forked does

    url = own_wisp.url("zygote--inside", "/?hold=1")
    with ThreadPoolExecutor(2) as pool:
        parents = {r.json()["ppid"] for r in pool.map(lambda _: requests.get(url, timeout=120), range(2))}
    assert old_function_zygote in parents  # the warm container kept serving
    assert parents - {old_function_zygote}, parents  # the new container came from a new zygote

    own_wisp.run("app", "stop", "zygote")
    wait_until(lambda: not _zygotes(folder), message="every zygote of the app to exit")
    wait_until(lambda: not Path(f"/proc/{old_image_zygote}").exists() or _state(old_image_zygote) == "Z",
               message="the retired image zygote to exit")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_script_that_imports_numpy_and_pandas_still_forks(wisp: Wisp, tmp_path: Path) -> None:
    """OpenBLAS's pool is native threads left by the import, known to survive a fork."""
    shutil.copy(REPO / "tests/e2e/apps/zygote_numpy.py", tmp_path / "zygote_numpy.py")
    wisp.run("deploy", str(tmp_path / "zygote_numpy.py"))
    url = wisp.url("zygote-numpy--matmul", "/?n=200&hold=0.5")
    with ThreadPoolExecutor(2) as pool:
        answers = [r.json() for r in pool.map(lambda _: requests.get(url, timeout=120), range(2))]
    assert len({a["pid"] for a in answers}) == 2
    for answer in answers:
        assert answer["sum"] == 200.0**3  # BLAS works in every forked container
        assert answer["frame_sum"] == 199 * 200 // 2  # and pandas
        assert "wisp._runtime.zygote" in answer["parent"]
    assert "fresh process" not in _log(wisp, "zygote-numpy")
    wisp.run("app", "stop", "zygote-numpy")

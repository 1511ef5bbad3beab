"""The local image builder: cache keys, the local runtime's mapping of paths, and real builds (uv)."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from wisp import Image
from wisp._image import file_sha256
from wisp._image_steps import Env, ImageSpec
from wisp._session import package as _package
from wisp._session.progress import BuildProgress, mount_blobs, watch_dirs
from wisp.server import images
from wisp.server.images import (
    BUILDERS,
    COMPLETE,
    ImageBuildError,
    LocalImageBuilder,
    build_key,
    find_python,
    get_builder,
    runtime_requirements,
)
from wisp.server.runtime.placement import check_local_runtime, container_settings, local_path, place_files

BASE = Image.debian_slim()


# -- what a build depends on --------------------------------------------------------------------------
@pytest.fixture
def local_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text("{}")
    return path


def test_trailing_env_workdir_and_local_files_never_rebuild(local_file: Path) -> None:
    built = BASE.pip_install("six")
    same_env = [built.env({"A": "1"}), built.workdir("/srv"), built.add_local_file(local_file, "c.json"),
                built.env({"A": "1"}).workdir("w").add_local_file(local_file, "c.json")]
    assert {build_key(i.spec) for i in same_env} == {build_key(built.spec)}
    assert same_env[-1].spec.build_steps == built.spec.steps


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (BASE, BASE.pip_install("six")),
        (BASE, Image.debian_slim("3.12")),
        (BASE.env({"A": "1"}).run_commands("echo $A"), BASE.env({"A": "2"}).run_commands("echo $A")),  # env before a command
        (BASE.run_commands("a"), BASE.run_commands("b")),
        (BASE.apt_install("curl"), BASE),
    ],
)
def test_build_steps_change_the_key(left: Image, right: Image) -> None:
    assert build_key(left.spec) != build_key(right.spec)


def test_key_ignores_order_and_reads_the_first_spec_format() -> None:
    assert build_key(BASE.pip_install("b", "a").spec) == build_key(BASE.pip_install("a").pip_install("b").spec)
    assert build_key(ImageSpec.from_data({"base": "debian_slim", "python_version": None, "pip": ["a", "b"]})) == build_key(BASE.pip_install("a", "b").spec)


def test_the_agents_pins_give_way_to_packages_the_user_names() -> None:
    pins = runtime_requirements([])
    assert any(p.startswith("fastapi==") for p in pins)
    assert not any(p.startswith(("fastapi==", "pydantic==")) for p in runtime_requirements(["FastAPI<1", "pydantic[email]"]))


# -- the local runtime's filesystem: /root is the app version's folder --------------------------------
@pytest.mark.parametrize(
    ("remote", "expected"),
    [("/root", "APP"), ("/root/a/b.txt", "APP/a/b.txt"), ("/rootless", "/rootless"), ("/tmp", "/tmp")],
)
def test_local_path(remote: str, expected: str, tmp_path: Path) -> None:
    assert local_path(remote, tmp_path) == Path(expected.replace("APP", str(tmp_path)))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (lambda f: BASE.add_local_file(f, "/etc/app.json"), "places local files only below /root"),
        (lambda f: BASE.workdir("/no/such/folder/xyz"), r"workdir\('/no/such/folder/xyz'\): no such folder on this machine"),
    ],
)
def test_what_the_local_runtime_cannot_honour_fails_before_building(local_file: Path, image: Any, message: str) -> None:
    with pytest.raises(ImageBuildError, match=message) as info:
        check_local_runtime([image(local_file).spec])
    assert "sandboxed runtime" in str(info.value)


def test_two_images_may_not_put_different_files_at_one_path(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    same = BASE.add_local_file(tmp_path / "a.txt", "x.txt")
    check_local_runtime([same.spec, same.env({"A": "1"}).spec, BASE.workdir("/tmp").spec])  # the same file twice is fine
    with pytest.raises(ImageBuildError, match="Two images of this app put different files at /root/x.txt"):
        check_local_runtime([same.spec, BASE.add_local_file(tmp_path / "b.txt", "x.txt").spec])


def _blobs(files_dir: Path, *paths: Path) -> None:
    (files_dir / ".wisp-mounts").mkdir(parents=True)
    for path in paths:
        shutil.copy(path, files_dir / ".wisp-mounts" / file_sha256(path))


def test_place_files_puts_local_files_and_the_workdir_into_the_version_folder(tmp_path: Path) -> None:
    (tmp_path / "src" / "d").mkdir(parents=True)
    (tmp_path / "src" / "one.txt").write_text("1")
    (tmp_path / "src" / "d" / "two.txt").write_text("2")
    image = BASE.workdir("work").add_local_file(tmp_path / "src/one.txt", "one.txt").add_local_dir(tmp_path / "src/d", "/root/data")
    version = tmp_path / "v1"
    _blobs(version, tmp_path / "src/one.txt", tmp_path / "src/d/two.txt")
    place_files([image.spec], version)
    assert (version / "work" / "one.txt").read_text() == "1"
    assert (version / "data" / "two.txt").read_text() == "2"
    assert not (version / ".wisp-mounts").exists()


def test_place_files_without_the_contents_says_so(tmp_path: Path, local_file: Path) -> None:
    (tmp_path / "v1").mkdir()
    with pytest.raises(ImageBuildError, match="lacks the contents of .*config.json"):
        place_files([BASE.add_local_file(local_file, "c.json").spec], tmp_path / "v1")


def test_container_settings_activate_the_image_and_apply_env_and_workdir(tmp_path: Path) -> None:
    python = tmp_path / "images" / "k" / "bin" / "python"
    env, cwd = container_settings(BASE.env({"MODE": "prod"}).workdir("work").spec, python, tmp_path / "v1")
    assert cwd == tmp_path / "v1" / "work"
    assert env["WISP_WORKDIR"] == str(cwd)
    assert env["MODE"] == "prod"
    assert env["VIRTUAL_ENV"] == str(tmp_path / "images" / "k")
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "images" / "k" / "bin")
    assert container_settings(BASE.spec, python, tmp_path / "v1")[1] == tmp_path / "v1"
    assert container_settings(BASE.workdir("/tmp").spec, python, tmp_path / "v1")[1] == Path("/tmp")


# -- system packages and interpreters ------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian-like host")
def test_apt_install_checks_the_host_and_names_what_is_missing() -> None:
    asyncio.run(images._check_apt(["dpkg"]))  # always there where dpkg-query is
    with pytest.raises(ImageBuildError) as info:
        asyncio.run(images._check_apt(["dpkg", "wisp-no-such-deb-1", "wisp-no-such-deb-2=1.0"]))
    message = str(info.value)
    assert "wisp-no-such-deb-1, wisp-no-such-deb-2 are not installed on this machine" in message
    assert "sudo apt-get install wisp-no-such-deb-1 wisp-no-such-deb-2`) and deploy again" in message
    assert "cannot install system packages (it has no root file system of the image's own)" in message
    assert "Dockerfile" not in message  # no runtime builds one


def test_find_python_uses_the_servers_own_for_its_version_and_explains_a_missing_one() -> None:
    host = ".".join(map(str, sys.version_info[:2]))
    assert asyncio.run(find_python(None))[0] == sys.executable
    assert asyncio.run(find_python(host))[0] == sys.executable
    with pytest.raises(ImageBuildError) as info:
        asyncio.run(find_python("3.99"))
    assert "no Python 3.99 interpreter was found" in str(info.value)
    assert "`uv python install 3.99`" in str(info.value)
    assert "drop python_version" in str(info.value)


# -- the CLI side: what is sent and what is shown -----------------------------------------------------
def test_local_files_travel_in_the_tarball_by_their_hash(tmp_path: Path, local_file: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "script.py").write_text("")
    spec = {"functions": [{"image": BASE.add_local_file(local_file, "c.json").spec.to_data()}, {"image": BASE.spec.to_data()}]}
    blobs = mount_blobs(spec)
    assert blobs == {file_sha256(local_file): str(local_file)}
    assert watch_dirs(spec) == [local_file.parent]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(_package.pack_files(tmp_path / "app", blobs)))) as tar:
        assert sorted(tar.getnames()) == sorted([f".wisp-mounts/{file_sha256(local_file)}", "script.py"])
    local_file.write_text("edited meanwhile")
    with pytest.raises(_package.PackageError, match="changed while it was being sent"):
        _package.pack_files(tmp_path / "app", blobs)


def test_progress_shows_steps_times_the_output_tail_and_cached(capsys: pytest.CaptureFixture[str]) -> None:
    show = BuildProgress()
    events: list[dict[str, Any]] = [
        {"event": "cached", "image": "aaa", "for": "f", "seconds": 0.0004},
        {"event": "build", "image": "bbb", "for": "g, h", "steps": 2},
        {"event": "step", "image": "bbb", "step": 1, "steps": 2, "name": "pip_install six"},
        *({"event": "output", "image": "bbb", "step": 1, "line": f"line {i}"} for i in range(8)),
        {"event": "step_done", "image": "bbb", "step": 1, "steps": 2, "name": "pip_install six", "seconds": 0.5},
        {"event": "step", "image": "bbb", "step": 2, "steps": 2, "name": "run_commands: false"},
        {"event": "output", "image": "bbb", "step": 2, "line": "boom"},
        {"event": "failed", "image": "bbb", "step": 2, "steps": 2, "name": "run_commands: false", "seconds": 0.01, "error": "x"},
    ]
    for event in events:
        show(event)
    assert capsys.readouterr().out.splitlines() == [
        "Image aaa (f): cached (0.4 ms)",
        "Image bbb (g, h): building, 2 steps",
        "  bbb [1/2] pip_install six",
        "  bbb     … 3 earlier lines",
        *(f"  bbb     | line {i}" for i in range(3, 8)),
        "  bbb [1/2] done in 0.50 s",
        "  bbb [2/2] run_commands: false",
        "  bbb     | boom",
        "  bbb [2/2] FAILED in 0.01 s",
    ]


# -- real builds with uv -------------------------------------------------------------------------------
def _collect() -> tuple[list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    return events, events.append


def test_one_build_for_concurrent_requests_then_a_cache_hit(tmp_path: Path) -> None:
    builder = LocalImageBuilder(tmp_path)
    image = BASE.run_commands("echo $VIRTUAL_ENV $GREETING > where.txt; pwd >> where.txt; pip --version >> where.txt")
    image = Image(dataclasses.replace(image.spec, steps=(Env((("GREETING", "hi"),)), *image.spec.steps)))
    first, second, third = _collect(), _collect(), _collect()

    async def main() -> tuple[Path, Path, Path]:
        a, b = await asyncio.gather(builder.ensure(image.spec, first[1], "f"), builder.ensure(image.spec, second[1], "g"))
        return a, b, await builder.ensure(image.spec, third[1], "h")

    a, b, c = asyncio.run(main())
    assert a == b == c == tmp_path / "images" / build_key(image.spec) / "bin" / "python"
    folder = a.parent.parent
    assert [e["event"] for e in first[0] if e["event"] != "output"] == [
        "build", *(["step", "step_done"] * 3), "built"]
    assert [e for e in first[0] if e["event"] != "output"] == [{**e, "for": "f"} for e in second[0] if e["event"] != "output"]
    assert [(e["event"], e["for"]) for e in third[0]] == [("cached", "h")]
    where = (folder / "where.txt").read_text().split("\n")
    assert where[0] == f"{folder} hi" and where[1] == str(folder) and where[2].startswith("pip ")
    meta = json.loads((folder / COMPLETE).read_text())
    assert meta["key"] == folder.name and meta["image"] == image.hash and meta["size"] > 0
    assert list((folder / "lib").glob("python3*/site-packages/fastapi/__pycache__/*.pyc")), "bytecode compiled at build"
    [entry] = builder.list_images({folder.name: ["app"]})
    assert (entry["key"], entry["state"], entry["used_by"]) == (folder.name, "ready", ["app"])
    assert builder.prune({folder.name: ["app"]})["removed"] == []
    assert [r["key"] for r in builder.prune({})["removed"]] == [folder.name]
    assert not folder.exists() and builder.list_images({}) == []


def test_a_failed_step_names_itself_shows_its_output_and_leaves_nothing_usable(tmp_path: Path) -> None:
    builder = LocalImageBuilder(tmp_path)
    image = BASE.run_commands("echo about to fail; exit 3")
    events, listen = _collect()
    with pytest.raises(ImageBuildError) as info:
        asyncio.run(builder.ensure(image.spec, listen))
    assert str(info.value) == "Image build step `run_commands: echo about to fail; exit 3` failed (exit 3):\nabout to fail"
    assert events[-1]["event"] == "failed" and events[-1]["name"] == "run_commands: echo about to fail; exit 3"
    assert not (tmp_path / "images" / build_key(image.spec)).exists()  # so the next request builds again
    assert builder._builds == {}


def test_an_interrupted_build_is_never_used_and_its_command_is_killed(tmp_path: Path) -> None:
    builder = LocalImageBuilder(tmp_path)
    marker = tmp_path / "still-running"
    image = BASE.run_commands(f"sleep 1; touch {marker}")
    folder = tmp_path / "images" / build_key(image.spec)

    async def main() -> None:
        started = asyncio.Event()
        def on_event(event: dict[str, Any]) -> None:
            if event.get("name", "").startswith("run_"):
                started.set()

        task = asyncio.ensure_future(builder.ensure(image.spec, on_event))
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(0.2)
        assert folder.exists() and not (folder / COMPLETE).exists()
        for build in list(builder._builds.values()):  # what server shutdown does: cancel every task
            assert build.task is not None
            build.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not folder.exists()
    (folder / "bin").mkdir(parents=True)  # as a server killed mid-build would leave it
    assert [e["state"] for e in builder.list_images({})] == ["incomplete"]
    assert builder.prune({})["removed"][0]["key"] == folder.name
    asyncio.run(asyncio.sleep(1.5))
    assert not marker.exists(), "the build command outlived its build"


def _other_python() -> str | None:
    """A Python version other than the server's that this machine has, if any."""
    for version in ("3.12", "3.11", "3.13", "3.10"):
        if version == f"{sys.version_info.major}.{sys.version_info.minor}":
            continue
        try:
            asyncio.run(find_python(version))
        except ImageBuildError:
            continue
        return version
    return None


OTHER_PYTHON = _other_python()


@pytest.mark.skipif(OTHER_PYTHON is None, reason="no Python other than the server's on this machine")
def test_python_version_other_than_the_servers_is_honoured(tmp_path: Path) -> None:
    assert OTHER_PYTHON is not None
    python = asyncio.run(LocalImageBuilder(tmp_path).ensure(Image.debian_slim(OTHER_PYTHON).spec))
    out = subprocess.run([str(python), "-c", "import sys, fastapi, wisp._runtime; print(*sys.version_info[:2], sep='.')"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == OTHER_PYTHON
    assert json.loads((python.parent.parent / COMPLETE).read_text())["python"].startswith(OTHER_PYTHON)


def test_builders_are_chosen_by_name(tmp_path: Path) -> None:
    assert isinstance(get_builder("local", tmp_path), LocalImageBuilder) and set(BUILDERS) == {"local"}
    with pytest.raises(ValueError, match=r"Unknown image builder 'docker' \(WISP_BUILDER\). Choose one of: local"):
        get_builder("docker", tmp_path)

"""Images are immutable values hashed by content (STYLE rule 3): nothing is built here."""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wisp import Image
from wisp._image import ContextFile, file_sha256

BASE = Image.debian_slim()
HOST = f"{sys.version_info.major}.{sys.version_info.minor}"


def pip(*packages: str, op: str = "pip_install", **options: Any) -> dict[str, Any]:
    return {"op": op, "packages": list(packages), "index_url": options.get("index_url"),
            "extra_index_url": options.get("extra_index_url"), "pre": options.get("pre", False)}


# -- identity: the hash covers the chain, not the way it was written --------------------------------
@pytest.mark.parametrize(
    ("left", "right"),
    [
        (BASE.pip_install("a", "b"), BASE.pip_install("b", "a")),
        (BASE.pip_install("a").pip_install("b"), BASE.pip_install("b").pip_install("a")),
        (BASE.pip_install(["a", "b"]), BASE.pip_install("b", "a")),
        (BASE.pip_install(("a",), ["b"]), BASE.pip_install("a", "b")),
        (BASE.pip_install(["a", ["b", ("c",)]]), BASE.pip_install("c", "b", "a")),  # type: ignore[list-item]
        (BASE.pip_install("a", "a", "b"), BASE.pip_install("a", "b")),
        (BASE.pip_install("a").pip_install("a", "b"), BASE.pip_install("a", "b")),
        (BASE.pip_install(" a ", "b"), BASE.pip_install("a", "b")),
        (BASE.pip_install("a", "", "  "), BASE.pip_install("a")),
        (BASE.pip_install(), BASE),
        (BASE.pip_install([]), BASE),
        (Image.debian_slim("3.11").pip_install("x", "y"), Image.debian_slim("3.11").pip_install("y", "x")),
        (BASE.uv_pip_install("b", "a"), BASE.uv_pip_install("a").uv_pip_install("b")),
        (BASE.apt_install("git", "curl"), BASE.apt_install("curl").apt_install("git", "curl")),
        (BASE.run_commands("a", "b"), BASE.run_commands("a").run_commands("b")),
        (BASE.run_commands(["a", "b"]), BASE.run_commands("a", "b")),
        (BASE.env({"B": "2", "A": "1"}), BASE.env({"A": "1"}).env({"B": "2"})),
        (BASE.env({"A": "1"}).env({"A": "2"}), BASE.env({"A": "2"})),
        (BASE.env({}), BASE),
        (BASE.apt_install(), BASE),
        (BASE.run_commands(), BASE),
        (BASE.workdir("app"), BASE.workdir("/root/app")),
        (BASE.workdir("/srv").workdir("x"), BASE.workdir("/srv/x")),
    ],
)
def test_same_content_in_any_form_gives_the_same_image(left: Image, right: Image) -> None:
    assert left.hash == right.hash
    assert left.spec == right.spec
    assert left == right
    assert hash(left) == hash(right)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (BASE, BASE.pip_install("a")),
        (BASE.pip_install("a"), BASE.pip_install("b")),
        (BASE.pip_install("a"), BASE.pip_install("a", "b")),
        (BASE.pip_install("a==1"), BASE.pip_install("a==2")),
        (BASE, Image.debian_slim("3.11")),
        (Image.debian_slim("3.11"), Image.debian_slim("3.12")),
        (Image.debian_slim("3.11").pip_install("a"), BASE.pip_install("a")),
        (BASE.pip_install("a"), BASE.uv_pip_install("a")),
        (BASE.pip_install("a"), BASE.pip_install("a", pre=True)),
        (BASE.pip_install("a"), BASE.pip_install("a", index_url="https://example.org/simple")),
        (BASE.pip_install("a"), BASE.pip_install("a", extra_index_url="https://example.org/simple")),
        (BASE.run_commands("a", "b"), BASE.run_commands("b", "a")),  # commands keep their order
        (BASE.pip_install("a").run_commands("x"), BASE.run_commands("x").pip_install("a")),  # so do steps
        (BASE.pip_install("a").run_commands("x").pip_install("b"), BASE.pip_install("a", "b").run_commands("x")),
        (BASE.env({"A": "1"}), BASE.env({"A": "2"})),
        (BASE.workdir("/srv"), BASE.workdir("/opt")),
        (BASE.apt_install("curl"), BASE.pip_install("curl")),
    ],
)
def test_different_content_gives_a_different_hash(left: Image, right: Image) -> None:
    assert left.hash != right.hash
    assert left != right


def test_hash_is_a_short_hex_digest() -> None:
    assert len(BASE.hash) == 16
    int(BASE.hash, 16)


# -- the spec of each builder method -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "steps"),
    [
        (BASE, []),
        (BASE.pip_install("b", "a"), [pip("a", "b")]),
        (BASE.pip_install(["requests>=2", "boto3"], "boto3"), [pip("boto3", "requests>=2")]),
        (BASE.pip_install("z").pip_install("y").pip_install("z"), [pip("y", "z")]),
        (BASE.pip_install("a", index_url="https://i/simple", extra_index_url="https://e/simple", pre=True),
         [pip("a", index_url="https://i/simple", extra_index_url="https://e/simple", pre=True)]),
        (BASE.pip_install("a").pip_install("b", pre=True), [pip("a"), pip("b", pre=True)]),  # other options: a new step
        (BASE.uv_pip_install("b", "a"), [pip("a", "b", op="uv_pip_install")]),
        (BASE.apt_install("git", "curl", "git"), [{"op": "apt_install", "packages": ["curl", "git"]}]),
        (BASE.run_commands("echo 1", ["echo 2"]), [{"op": "run_commands", "commands": ["echo 1", "echo 2"]}]),
        (BASE.env({"B": "x y", "A": ""}), [{"op": "env", "vars": {"A": "", "B": "x y"}}]),
        (BASE.workdir("app"), [{"op": "workdir", "path": "/root/app"}]),
        (BASE.workdir("/srv/./app/"), [{"op": "workdir", "path": "/srv/app"}]),
        (BASE.workdir("/srv").workdir("../opt"), [{"op": "workdir", "path": "/opt"}]),
        (BASE.workdir("/srv").env({"A": "1"}).workdir("x"),
         [{"op": "workdir", "path": "/srv"}, {"op": "env", "vars": {"A": "1"}}, {"op": "workdir", "path": "/srv/x"}]),
        (BASE.pip_install("a").run_commands("x").pip_install("b"),
         [pip("a"), {"op": "run_commands", "commands": ["x"]}, pip("b")]),
    ],
)
def test_builder_methods_record_steps(image: Image, steps: list[dict[str, Any]]) -> None:
    assert image.spec.to_data() == {"base": "debian_slim", "python_version": None, "steps": steps}


BUILDERS: list[tuple[str, Callable[[Image], Image]]] = [
    ("pip_install", lambda i: i.pip_install("b")),
    ("uv_pip_install", lambda i: i.uv_pip_install("b")),
    ("apt_install", lambda i: i.apt_install("curl")),
    ("run_commands", lambda i: i.run_commands("true")),
    ("env", lambda i: i.env({"K": "v"})),
    ("workdir", lambda i: i.workdir("/srv")),
]


@pytest.mark.parametrize("method", [b for _, b in BUILDERS], ids=[n for n, _ in BUILDERS])
def test_every_method_returns_a_new_image_and_leaves_the_original_unchanged(method: Callable[[Image], Image]) -> None:
    original = Image.debian_slim("3.11").pip_install("a")
    spec_before, hash_before = original.spec, original.hash
    derived = method(original)
    assert derived is not original
    assert derived.hash != hash_before
    assert original.spec == spec_before
    assert original.hash == hash_before


def test_spec_is_immutable() -> None:
    image = BASE.pip_install("a")
    image.spec.to_data()["steps"][0]["packages"].append("evil")
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.spec.python_version = "3.99"  # type: ignore[misc]  # what the test checks
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.spec.steps[0].packages = ("evil",)  # type: ignore[misc]
    assert image.spec.to_data() == {"base": "debian_slim", "python_version": None, "steps": [pip("a")]}


def test_from_spec_copies_its_input() -> None:
    spec = BASE.pip_install("a").spec.to_data()
    image = Image.from_spec(spec)
    spec["steps"][0]["packages"].append("b")
    assert image.spec.to_data()["steps"][0]["packages"] == ["a"]


def test_from_spec_reads_the_first_spec_format() -> None:
    old = {"base": "debian_slim", "python_version": "3.11", "pip": ["b", "a"]}
    assert Image.from_spec(old) == Image.debian_slim("3.11").pip_install("a", "b")
    assert Image.from_spec({"base": "debian_slim", "python_version": None, "pip": []}) == BASE


@pytest.mark.parametrize("version", [None, "3.10", "3.11", "3.12", "3.11.7", "3.9.18"])
def test_debian_slim_accepts_python_versions(version: str | None) -> None:
    assert Image.debian_slim(version).spec.to_data() == {"base": "debian_slim", "python_version": version, "steps": []}


@pytest.mark.parametrize("version", ["3", "2.7", "3.x", "python3.11", "3.11.", "3.11.7.1", "", " 3.11", "latest"])
def test_debian_slim_rejects_bad_python_versions(version: str) -> None:
    with pytest.raises(ValueError) as info:
        Image.debian_slim(version)
    message = str(info.value)
    assert "python_version" in message
    assert "'3.11'" in message  # an example of what to write
    assert repr(version) in message  # and what was given


@pytest.mark.parametrize("version", [3.10, "3.11\n"], ids=["float-3.10", "trailing-newline"])
def test_debian_slim_rejects_python_versions_that_only_look_right(version: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        Image.debian_slim(version)


@pytest.mark.parametrize(
    "packages",
    [(3,), ("a", None), (["a", 1.5],), (object(),), (b"boto3",)],
    ids=["int", "none", "float-in-list", "object", "bytes"],
)
def test_pip_install_rejects_non_strings(packages: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError, match=r"pip_install\(\) takes package names as strings"):
        BASE.pip_install(*packages)


def test_pip_install_type_error_suggests_the_right_form() -> None:
    with pytest.raises(TypeError, match=r'\.pip_install\("boto3"'):
        BASE.pip_install(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: BASE.pip_install("a", index_url=3), TypeError, "index_url must be a string"),  # type: ignore[arg-type]
        (lambda: BASE.apt_install("Not A Package"), ValueError, "not a Debian package name"),
        (lambda: BASE.apt_install(7), TypeError, r"apt_install\(\) takes package names as strings"),  # type: ignore[arg-type]
        (lambda: BASE.run_commands(["ok", 3]), TypeError, r"run_commands\(\) takes shell commands as strings"),  # type: ignore[list-item]
        (lambda: BASE.env(["A=1"]), TypeError, r"env\(\) takes a dict"),  # type: ignore[arg-type]
        (lambda: BASE.env({"1A": "x"}), ValueError, "not a valid environment variable name"),
        (lambda: BASE.env({"A": 1}), TypeError, "must be a string"),  # type: ignore[dict-item]
        (lambda: BASE.env({"A": "two\nlines"}), ValueError, "one line"),
        (lambda: BASE.workdir(""), ValueError, "non-empty path"),
        (lambda: BASE.add_local_python_source("not a module"), ValueError, "not a module name"),
        (lambda: BASE.add_local_python_source("wisp_no_such_module_xyz"), ModuleNotFoundError, "beside your script"),
        (lambda: BASE.add_local_file("/no/such/file.txt", "f.txt"), FileNotFoundError, "no such file"),
        (lambda: BASE.add_local_dir("/no/such/dir", "d"), NotADirectoryError, "no such folder"),
        (lambda: BASE.pip_install_from_requirements("/no/such/requirements.txt"), FileNotFoundError, "no such file"),
        (lambda: BASE.pip_install_from_pyproject("/no/such/pyproject.toml"), FileNotFoundError, "no such file"),
    ],
)
def test_mistakes_fail_at_once_and_say_what_to_write(build: Callable[[], Image], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


# -- local files: hashed by content, mounted last ---------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text('{"mode": "a"}')
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "one.txt").write_text("1")
    (data / "sub" / "two.txt").write_text("2")
    (data / "skip.log").write_text("log")
    (data / "__pycache__").mkdir()
    (data / "__pycache__" / "x.pyc").write_bytes(b"\0")
    return tmp_path


def test_add_local_file_records_the_contents_hash_and_an_absolute_remote_path(project: Path) -> None:
    image = BASE.add_local_file(project / "config.json", "config.json")
    assert image.spec.to_data()["steps"] == [{"op": "add_local_file", "local": str(project / "config.json"),
                                    "remote": "/root/config.json", "sha256": file_sha256(project / "config.json")}]
    assert BASE.add_local_file(project / "config.json", "/etc/app/").spec.to_data()["steps"][0]["remote"] == "/etc/app/config.json"
    assert BASE.workdir("/srv").add_local_file(project / "config.json", "c.json").spec.to_data()["steps"][1]["remote"] == "/srv/c.json"


def test_editing_an_added_local_file_changes_the_hash(project: Path) -> None:
    before = BASE.pip_install("a").add_local_file(project / "config.json", "config.json")
    (project / "config.json").write_text('{"mode": "b"}')
    after = BASE.pip_install("a").add_local_file(project / "config.json", "config.json")
    assert before.hash != after.hash
    assert before.hash == before.hash  # a value: its own hash never changes


def test_editing_adding_or_removing_a_file_in_an_added_dir_changes_the_hash(project: Path) -> None:
    def image() -> Image:
        return BASE.add_local_dir(project / "data", "/root/data")

    hashes = [image().hash]
    (project / "data" / "sub" / "two.txt").write_text("two")
    hashes.append(image().hash)
    (project / "data" / "three.txt").write_text("3")
    hashes.append(image().hash)
    (project / "data" / "one.txt").unlink()
    hashes.append(image().hash)
    assert len(set(hashes)) == 4
    assert image().hash == hashes[-1]


def test_the_hash_covers_contents_not_where_they_are_locally(tmp_path: Path) -> None:
    for name in ("left", "right"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text("same")
    assert BASE.add_local_file(tmp_path / "left/f.txt", "f.txt") == BASE.add_local_file(tmp_path / "right/f.txt", "f.txt")
    assert BASE.add_local_file(tmp_path / "left/f.txt", "f.txt") != BASE.add_local_file(tmp_path / "left/f.txt", "g.txt")


@pytest.mark.parametrize(
    ("ignore", "files"),
    [
        ((), ["__pycache__/x.pyc", "one.txt", "skip.log", "sub/two.txt"]),
        (["*.log", "__pycache__"], ["one.txt", "sub/two.txt"]),
        (["sub/"], ["__pycache__/x.pyc", "one.txt", "skip.log"]),
        (["sub/*.txt", "*.pyc"], ["one.txt", "skip.log"]),
        (lambda p: p.suffix != ".txt" and p.name != "sub", ["one.txt", "sub/two.txt"]),
    ],
    ids=["nothing", "names", "folder", "paths", "callable"],
)
def test_add_local_dir_walks_the_folder_minus_what_is_ignored(project: Path, ignore: Any, files: list[str]) -> None:
    step = BASE.add_local_dir(project / "data", "data", ignore=ignore).spec.to_data()["steps"][0]
    assert (step["op"], step["local"], step["remote"]) == ("add_local_dir", str(project / "data"), "/root/data")
    assert [rel for rel, _ in step["files"]] == files
    assert dict(step["files"])["one.txt"] == file_sha256(project / "data" / "one.txt")


def test_add_local_python_source_takes_a_package_or_a_module_as_import_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "helpers" / "__pycache__").mkdir(parents=True)
    (tmp_path / "helpers" / "__init__.py").write_text("")
    (tmp_path / "helpers" / "text.py").write_text("X = 1")
    (tmp_path / "helpers" / "notes.md").write_text("not python")
    (tmp_path / "helpers" / "__pycache__" / "text.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "single.py").write_text("Y = 2")
    monkeypatch.syspath_prepend(str(tmp_path))
    package, module = BASE.add_local_python_source("helpers", "single").spec.to_data()["steps"]
    assert (package["remote"], [rel for rel, _ in package["files"]]) == ("/root/helpers", ["__init__.py", "text.py"])
    assert (module["remote"], module["files"]) == ("/root/single.py", [["", file_sha256(tmp_path / "single.py")]])
    assert sorted(remote for _, remote, _ in BASE.add_local_python_source("helpers", "single").spec.local_files()) == [
        "/root/helpers/__init__.py", "/root/helpers/text.py", "/root/single.py"]


def test_build_steps_after_local_files_are_refused(project: Path) -> None:
    image = BASE.add_local_file(project / "config.json", "config.json")
    with pytest.raises(ValueError, match=r"pip_install\(\) comes after add_local_\*\(\).*call add_local_file.* last"):
        image.pip_install("a")
    later: list[Callable[[Image], Image]] = [lambda i: i.run_commands("x"), lambda i: i.apt_install("curl"),
                                             lambda i: i.uv_pip_install("a")]
    for method in later:
        with pytest.raises(ValueError, match="comes after add_local"):
            method(image)
    image.env({"A": "1"}).workdir("/srv").add_local_dir(project / "data", "data")  # runtime settings are fine


def test_inside_a_container_local_files_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent imports the script again, where the files are already in place (or not there)."""
    monkeypatch.setenv("WISP_FUNCTION", "f")
    image = (BASE.pip_install_from_requirements("/gone/requirements.txt").add_local_file("/gone/f.txt", "f.txt")
             .add_local_dir("/gone/d", "d").add_local_python_source("gone_module"))
    assert [s["op"] for s in image.spec.to_data()["steps"]] == ["add_local_file", "add_local_dir", "add_local_python_source"]


def test_local_files_lists_every_mounted_file(project: Path) -> None:
    image = BASE.add_local_file(project / "config.json", "/root/cfg/").add_local_dir(project / "data", "d", ignore=["*.log", "__pycache__"])
    assert sorted((remote, sha) for _, remote, sha in image.spec.local_files()) == sorted([
        ("/root/cfg/config.json", file_sha256(project / "config.json")),
        ("/root/d/one.txt", file_sha256(project / "data/one.txt")),
        ("/root/d/sub/two.txt", file_sha256(project / "data/sub/two.txt")),
    ])
    assert {local for local, _, _ in image.spec.local_files()} == {
        str(project / "config.json"), str(project / "data/one.txt"), str(project / "data/sub/two.txt")}


# -- requirement files ---------------------------------------------------------------------------
def test_requirements_file_travels_in_the_spec_and_its_contents_are_hashed(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("six==1.16.0  # pinned\n\n-i https://example.org\nidna\n")
    image = BASE.pip_install_from_requirements(req, pre=True)
    assert image.spec.to_data()["steps"] == [{"op": "pip_install_from_requirements", "name": "requirements.txt",
                                    "content": req.read_text(), "index_url": None, "extra_index_url": None, "pre": True}]
    assert image.spec.requirements() == ["six==1.16.0", "idna"]
    req.write_text("six==1.17.0\n")
    assert BASE.pip_install_from_requirements(req, pre=True).hash != image.hash


def test_pyproject_dependencies_become_a_pip_install(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["six", "idna>=3"]\n'
        '[project.optional-dependencies]\nextra = ["jmespath"]\nother = ["attrs"]\n'
    )
    assert BASE.pip_install_from_pyproject(tmp_path / "pyproject.toml") == BASE.pip_install("idna>=3", "six")
    assert BASE.pip_install_from_pyproject(tmp_path / "pyproject.toml", optional_dependencies=["extra"]) == (
        BASE.pip_install("six", "idna>=3", "jmespath"))
    with pytest.raises(ValueError, match="no optional dependency group 'nope'; it has \\['extra', 'other'\\]"):
        BASE.pip_install_from_pyproject(tmp_path / "pyproject.toml", optional_dependencies=["nope"])


# -- repr and JSON ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (BASE, "Image.debian_slim()"),
        (Image.debian_slim("3.11"), "Image.debian_slim('3.11')"),
        (BASE.pip_install("b", "a"), "Image.debian_slim().pip_install('a', 'b')"),
        (Image.debian_slim("3.12").pip_install("x>=1"), "Image.debian_slim('3.12').pip_install('x>=1')"),
        (BASE.pip_install("a", pre=True).apt_install("curl").run_commands("make").env({"A": "1"}).workdir("w"),
         "Image.debian_slim().pip_install('a', pre=True).apt_install('curl').run_commands('make')"
         ".env({'A': '1'}).workdir('/root/w')"),
    ],
)
def test_repr(image: Image, expected: str) -> None:
    assert repr(image) == expected


@pytest.mark.parametrize(
    "image",
    [BASE, Image.debian_slim("3.11"), BASE.pip_install("boto3", "requests>=2"), Image.debian_slim("3.12.1").pip_install("a"),
     BASE.uv_pip_install("a", index_url="https://i").apt_install("git").run_commands("a", "b").env({"A": "1"}).workdir("x")],
)
def test_from_spec_round_trip_through_json(image: Image) -> None:
    again = Image.from_spec(json.loads(json.dumps(image.spec.to_data())))
    assert again == image
    assert again.hash == image.hash
    assert again.spec == image.spec
    assert repr(again) == repr(image)


def test_images_are_usable_as_dict_keys() -> None:
    cache = {BASE.pip_install("a", "b"): "built"}
    assert cache[BASE.pip_install("b", "a")] == "built"


def test_image_is_not_equal_to_its_spec() -> None:
    assert BASE.spec != BASE


# -- Dockerfile rendering: one case per builder method ---------------------------------------------
HEAD = "FROM python:3.11-slim-bookworm\nWORKDIR /root\n"


@pytest.mark.parametrize(
    ("image", "body"),
    [
        (Image.debian_slim("3.11"), ""),
        (Image.debian_slim("3.11").pip_install("b>=2", "a"), "RUN python -m pip install --no-cache-dir a 'b>=2'\n"),
        (Image.debian_slim("3.11").pip_install("a", index_url="https://i/simple", extra_index_url="https://e", pre=True),
         "RUN python -m pip install --no-cache-dir --index-url https://i/simple --extra-index-url https://e --pre a\n"),
        (Image.debian_slim("3.11").uv_pip_install("a").uv_pip_install("b", pre=True),
         "RUN python -m pip install --no-cache-dir uv\n"
         "RUN uv pip install --system --compile-bytecode a\n"
         "RUN uv pip install --system --compile-bytecode --prerelease allow b\n"),
        (Image.debian_slim("3.11").apt_install("git", "curl"),
         "RUN apt-get update && apt-get install -y --no-install-recommends curl git && rm -rf /var/lib/apt/lists/*\n"),
        (Image.debian_slim("3.11").run_commands("echo hi > /tmp/x", "make -j2"), "RUN echo hi > /tmp/x\nRUN make -j2\n"),
        (Image.debian_slim("3.11").run_commands("set -e\nmake"), "RUN <<'WISP_EOF'\nset -e\nmake\nWISP_EOF\n"),
        (Image.debian_slim("3.11").env({"B": 'say "hi" $HOME', "A": "1"}), 'ENV A="1" B="say \\"hi\\" \\$HOME"\n'),
        (Image.debian_slim("3.11").workdir("app").env({"A": "1"}).workdir("x"), 'WORKDIR /root/app\nENV A="1"\nWORKDIR /root/app/x\n'),
    ],
    ids=["base", "pip_install", "pip_options", "uv_pip_install", "apt_install", "run_commands", "multiline", "env", "workdir"],
)
def test_dockerfile_per_builder_method(image: Image, body: str) -> None:
    build = image.dockerfile()
    assert build.dockerfile == HEAD + body
    assert build.context == ()


def test_dockerfile_uses_the_host_python_by_default() -> None:
    assert BASE.dockerfile().dockerfile.startswith(f"FROM python:{HOST}-slim-bookworm\n")
    assert Image.debian_slim("3.12.1").dockerfile().dockerfile.startswith("FROM python:3.12.1-slim-bookworm\n")


def test_dockerfile_of_local_files_and_requirements_with_their_build_context(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "requirements.txt").write_text("six\n")
    (project / "my mod.txt").write_text("spaces")
    (project / "pkg").mkdir()
    (project / "pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(project))
    image = (Image.debian_slim("3.11").pip_install_from_requirements(project / "requirements.txt")
             .add_local_file(project / "config.json", "/etc/app/config.json")
             .add_local_dir(project / "data", "data", ignore=["__pycache__", "*.log"])
             .add_local_file(project / "my mod.txt", "my mod.txt")
             .add_local_python_source("pkg"))
    build = image.dockerfile()
    assert build.dockerfile == HEAD + (
        "COPY context/0/requirements.txt /.wisp/0/requirements.txt\n"
        "RUN python -m pip install --no-cache-dir -r /.wisp/0/requirements.txt\n"
        "COPY context/1/config.json /etc/app/config.json\n"
        "COPY context/2/ /root/data/\n"
        'COPY ["context/3/my mod.txt", "/root/my mod.txt"]\n'
        "COPY context/4/ /root/pkg/\n"
    )
    assert build.context == (
        ContextFile("context/0/requirements.txt", content="six\n"),
        ContextFile("context/1/config.json", source=str(project / "config.json")),
        ContextFile("context/2/one.txt", source=str(project / "data/one.txt")),
        ContextFile("context/2/sub/two.txt", source=str(project / "data/sub/two.txt")),
        ContextFile("context/3/my mod.txt", source=str(project / "my mod.txt")),
        ContextFile("context/4/__init__.py", source=str(project / "pkg/__init__.py")),
    )


def test_dockerfile_is_pure() -> None:
    image = Image.debian_slim("3.11").pip_install("a").run_commands("b")
    assert image.dockerfile() == image.dockerfile()

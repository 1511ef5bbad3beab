"""What `serve`/`deploy` send: the target script, its spec (from a fresh import) and its files."""
from __future__ import annotations

import base64
import io
import tarfile
import textwrap
from pathlib import Path

import pytest

from wisp._session import package as _package
from wisp._session.package import PackageError, Target, inspect_app, pack_files, source_dirs
from wisp._spec import AppSpec, WebSpec

# -- Target.parse -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stub_attr"),
    [("app.py", None), ("app.py::stub", "stub"), ("app.py::my_stub", "my_stub"), ("app.py::", None)],
)
def test_target_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, stub_attr: str | None) -> None:
    (tmp_path / "app.py").write_text("")
    monkeypatch.chdir(tmp_path)
    target = Target.parse(text)
    assert target == Target((tmp_path / "app.py").resolve(), stub_attr)
    assert target.script.is_absolute()


@pytest.mark.parametrize(
    ("create", "text", "message"),
    [
        (None, "missing.py", "No such file: missing.py. Pass the path of a Python script, e.g. `wisp serve app.py`."),
        (None, "missing.py::stub", "No such file: missing.py."),
        ("folder/", "folder", "No such file: folder."),
        ("notes.txt", "notes.txt", "notes.txt is not a .py file. Pass the Python script that defines your stub."),
        ("app", "app", "app is not a .py file."),
        ("app.pyc", "app.pyc::stub", "app.pyc is not a .py file."),
    ],
)
def test_target_parse_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, create: str | None, text: str, message: str
) -> None:
    if create is not None:
        if create.endswith("/"):
            (tmp_path / create).mkdir()
        else:
            (tmp_path / create).write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PackageError) as info:
        Target.parse(text)
    assert str(info.value).startswith(message)


# -- source_dirs and pack_files ---------------------------------------------------------------

TREE = {
    "app.py": "import pkg\n",
    "notes.txt": "shipped: files beside the script travel with it\n",
    ".env": "SECRET=1\n",
    "cached.pyc": "",
    "pkg/__init__.py": "",
    "pkg/mod.py": "X = 1\n",
    "pkg/mod.pyc": "",
    "pkg/sub/__init__.py": "",
    "pkg/sub/deep.py": "Y = 2\n",
    "pkg/templates/index.html": "<h1>package data</h1>\n",
    "pkg/__pycache__/mod.cpython-311.pyc": "",
    "pkg/.cache/x": "",
    "pkg2/__init__.py": "",
    "plain/helper.py": "",
    "plain/pkg/__init__.py": "",
    ".hidden/__init__.py": "",
    ".git/HEAD": "",
    "__pycache__/__init__.py": "",
    "venv/__init__.py": "",
    "node_modules/__init__.py": "",
    "env/__init__.py": "",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("folder", "included"),
    [
        ("pkg", True),
        ("pkg2", True),
        ("pkg/sub", True),
        ("pkg/templates", True),  # data inside a package ships with it
        ("plain", False),
        ("plain/pkg", False),
        (".hidden", False),
        (".git", False),
        ("__pycache__", False),
        ("pkg/__pycache__", False),
        ("pkg/.cache", False),
        ("venv", False),
        ("node_modules", False),
        ("env", False),
    ],
)
def test_source_dirs(tree: Path, folder: str, included: bool) -> None:
    assert (tree / folder in source_dirs(tree)) is included


def test_source_dirs_starts_with_the_script_folder(tree: Path) -> None:
    dirs = source_dirs(tree)
    assert dirs[0] == tree
    assert sorted(dirs) == sorted(tree / d for d in ["", "pkg", "pkg2", "pkg/sub", "pkg/templates"])


def test_source_dirs_of_a_folder_with_only_a_script(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    (tmp_path / "data").mkdir()
    assert source_dirs(tmp_path) == [tmp_path]


def test_source_dirs_visits_each_folder_once(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "self").symlink_to(".", target_is_directory=True)
    dirs = source_dirs(tmp_path)
    assert len({d.resolve() for d in dirs}) == len(dirs)


def unpack(data: str) -> dict[str, bytes]:
    raw = base64.b64decode(data, validate=True)
    assert raw[:2] == b"\x1f\x8b", "not gzip"
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        members = tar.getmembers()
        assert all(m.isfile() for m in members), "only regular files are shipped"
        return {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]


def test_pack_files_contains_exactly_the_source_files(tree: Path) -> None:
    files = unpack(pack_files(tree))
    assert set(files) == {
        "app.py",
        "notes.txt",
        "pkg/__init__.py",
        "pkg/mod.py",
        "pkg/sub/__init__.py",
        "pkg/sub/deep.py",
        "pkg/templates/index.html",
        "pkg2/__init__.py",
    }
    for name, content in files.items():
        assert content == TREE[name].encode()


def test_pack_files_of_a_single_script(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('hi')\n")
    assert unpack(pack_files(tmp_path)) == {"app.py": b"print('hi')\n"}


def test_pack_files_refuses_too_many_bytes(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_package, "MAX_FILES_BYTES", 10)
    with pytest.raises(PackageError, match="add up to more than .* Move the script into a folder of its own"):
        pack_files(tree)


# -- inspect_app ------------------------------------------------------------------------------


def script(tmp_path: Path, name: str, code: str) -> Target:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return Target.parse(str(path))


def test_inspect_app_returns_the_spec(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("GREETING = 'hi'\n")
    target = script(tmp_path, "hello_app.py", """
        import wisp
        from helpers import GREETING  # siblings import as under `python hello_app.py`

        stub = wisp.Stub()

        @stub.webhook(method="POST", keep_warm=True)
        def square(x: int = 2):
            return {"square": x**2, "greeting": GREETING}

        @stub.function()
        @wisp.asgi_app(label="api")
        def api():
            return None
    """)
    spec = AppSpec.from_dict(inspect_app(target))
    assert (spec.name, spec.module, spec.stub_attr) == ("hello_app", "hello_app", "stub")
    assert [f.name for f in spec.functions] == ["square", "api"]
    assert spec.function("square").web == WebSpec("webhook", "POST")
    assert spec.function("square").keep_warm == 2
    assert spec.function("api").web == WebSpec("asgi", label="api")


def test_inspect_app_uses_the_stub_name_and_the_named_stub(tmp_path: Path) -> None:
    path = tmp_path / "two_stubs.py"
    path.write_text(textwrap.dedent("""
        import wisp
        first = wisp.Stub("first-app")
        second = wisp.Stub("second-app")
    """))
    data = inspect_app(Target.parse(f"{path}::second"))
    assert (data["name"], data["stub_attr"], data["functions"]) == ("second-app", "second", [])


@pytest.mark.parametrize(
    ("code", "fragments"),
    [
        ("import wisp\nstub = wisp.Stub(\n", ["Importing broken.py failed", "SyntaxError"]),
        ("import wisp\nraise RuntimeError('boom at import')\n", ["Importing broken.py failed", "RuntimeError: boom at import"]),
        ("import wisp\nx = 1\n", ["No wisp.Stub found", "`stub = wisp.Stub()`"]),
        ("import wisp\na = wisp.Stub()\nb = wisp.Stub()\n", ["defines several stubs (a, b)", "`wisp serve broken.py::a`"]),
    ],
    ids=["syntax-error", "import-error", "no-stub", "two-stubs"],
)
def test_inspect_app_errors(tmp_path: Path, code: str, fragments: list[str]) -> None:
    target = script(tmp_path, "broken.py", code)
    with pytest.raises(PackageError) as info:
        inspect_app(target)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_inspect_app_named_attribute_that_is_not_a_stub(tmp_path: Path) -> None:
    path = tmp_path / "named.py"
    path.write_text("import wisp\nstub = wisp.Stub()\nother = 3\n")
    with pytest.raises(PackageError, match="`other` in .*named.py is not a wisp.Stub"):
        inspect_app(Target.parse(f"{path}::other"))


def test_inspect_keeps_what_the_script_prints_at_import_out_of_the_spec(tmp_path: Path) -> None:
    script = tmp_path / "noisy.py"
    script.write_text('import wisp\nprint("loading the model...")\nstub = wisp.Stub("noisy")\n\n\n'
                      '@stub.webhook\ndef f():\n    return 1\n')
    spec = inspect_app(Target.parse(str(script)))
    assert spec["name"] == "noisy"

"""Image values: an immutable description of a function's environment, hashed by content.

An image is a base (`debian_slim`, a Python version) and a chain of steps. Every builder method
returns a new Image; nothing is built here. The server's builder turns the spec into a virtual
environment (local runtime); `dockerfile()` renders the same spec for container backends.

Local files (`add_local_*`) are recorded with the SHA-256 of their contents, so the hash changes
when a file changes; the CLI sends those contents with the deploy and the server places them in
the app version's folder (the container's `/root`). They are mounts, not build steps, so they
must come after the build steps (as in Modal) and editing them never rebuilds the environment.
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
import posixpath
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ._image_steps import (
    ROOT,
    AddLocalDir,
    AddLocalFile,
    AddLocalPythonSource,
    AptInstall,
    ContextFile,
    DockerBuild,
    Env,
    ImageSpec,
    PipInstall,
    PipInstallFromRequirements,
    RunCommands,
    Step,
    UvPipInstall,
    Workdir,
    default_python,
)

_PYTHON_VERSION = re.compile(r"3\.\d+(\.\d+)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.\-]*(:[a-z0-9]+)?([=<>][A-Za-z0-9.+:~\-]*)?")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

MOUNT_BLOBS = ".wisp-mounts"  # where a deploy's tarball carries local files, named by their sha256

Ignore = Sequence[str] | Callable[[Path], bool]


def _in_container() -> bool:
    """Inside a container the script is imported again; its local files are already in place."""
    return "WISP_FUNCTION" in os.environ


def _flatten(packages: Iterable[Any], method: str = "pip_install") -> list[str]:
    """Accept `pip_install("a", "b")` and `pip_install(["a", "b"])` alike, as Modal does."""
    out: list[str] = []
    for item in packages:
        if isinstance(item, str):
            if item.strip():
                out.append(item.strip())
        elif isinstance(item, Iterable) and not isinstance(item, (bytes, bytearray)):
            out.extend(_flatten(item, method))
        else:
            what, example = {"apt_install": ("package names", '"curl", "git"'),
                             "run_commands": ("shell commands", '"echo hi > greeting.txt"')}.get(
                method, ("package names", '"boto3", "requests>=2"'))
            raise TypeError(f"{method}() takes {what} as strings, got {item!r}. Write for example `.{method}({example})`.")
    return out


def _optional_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string (a URL) or None, got {value!r}.")
    return value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remote(base: str, path: str | PurePosixPath, what: str) -> str:
    """An absolute container path: relative ones are taken from the working directory."""
    text = str(path)
    if not text or "\x00" in text:
        raise ValueError(f"{what} must be a non-empty path, got {path!r}.")
    return posixpath.normpath(posixpath.join(base, text))


def _ignored(matcher: Ignore) -> Callable[[Path], bool]:
    """Glob patterns (a pattern without `/` matches any path component) or a callable."""
    if callable(matcher):
        return matcher
    patterns = [matcher] if isinstance(matcher, str) else list(matcher)
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"ignore= takes glob patterns as strings or a callable, got {p!r}. "
                            'Write for example `ignore=["*.pyc", "data/"]`.')

    def ignored(rel: Path) -> bool:
        text = rel.as_posix()
        for pattern in patterns:
            pattern = pattern.rstrip("/")
            if "/" in pattern:
                if fnmatch.fnmatchcase(text, pattern.lstrip("/")):
                    return True
            elif any(fnmatch.fnmatchcase(part, pattern) for part in rel.parts):
                return True
        return False

    return ignored


def _walk(root: Path, ignored: Callable[[Path], bool]) -> tuple[tuple[str, str], ...]:
    """(relative path, sha256) of the files below root, sorted; symlinked folders are not followed."""
    files: list[tuple[str, str]] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not ignored((here / d).relative_to(root)) and not (here / d).is_symlink())
        for name in names:
            rel = (here / name).relative_to(root)
            if not ignored(rel) and (here / name).is_file():
                files.append((rel.as_posix(), file_sha256(here / name)))
    return tuple(sorted(files))


class Image:
    """An environment for functions: `Image.debian_slim().pip_install("boto3")`.

    Every builder method returns a new Image; the spec is an immutable `ImageSpec`, so two images
    with the same packages (in any order) hash the same and share one built environment.
    """

    __slots__ = ("_spec",)

    def __init__(self, spec: ImageSpec) -> None:
        self._spec = spec

    # -- base ----------------------------------------------------------------------------------
    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        if python_version is not None and not (
            isinstance(python_version, str) and _PYTHON_VERSION.fullmatch(python_version)
        ):
            raise ValueError(
                f"python_version must be a string like '3.11' or '3.11.7', got {python_version!r}."
            )
        return cls(ImageSpec("debian_slim", python_version))

    # -- Python packages -------------------------------------------------------------------------
    def pip_install(self, *packages: str | Iterable[str], index_url: str | None = None,
                    extra_index_url: str | None = None, pre: bool = False) -> Image:
        return self._install(PipInstall, packages, index_url, extra_index_url, pre)

    def uv_pip_install(self, *packages: str | Iterable[str], index_url: str | None = None,
                       extra_index_url: str | None = None, pre: bool = False) -> Image:
        return self._install(UvPipInstall, packages, index_url, extra_index_url, pre)

    def _install(self, kind: type[PipInstall], packages: tuple[Any, ...], index_url: Any, extra_index_url: Any,
                 pre: Any) -> Image:
        names = _flatten(packages, kind.op)
        if not names:
            return self
        return self._add(kind(tuple(sorted(set(names))), _optional_str("index_url", index_url),
                              _optional_str("extra_index_url", extra_index_url), bool(pre)))

    def pip_install_from_requirements(self, requirements_txt: str | os.PathLike[str], *, index_url: str | None = None,
                                      extra_index_url: str | None = None, pre: bool = False) -> Image:
        """Install a requirements file; its contents are read now and travel in the spec."""
        if _in_container():
            return self
        path = Path(requirements_txt).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"pip_install_from_requirements({str(requirements_txt)!r}): no such file "
                                    f"(looked at {path}). Relative paths start from the current directory.")
        return self._add(PipInstallFromRequirements(path.name, path.read_text(), _optional_str("index_url", index_url),
                                                    _optional_str("extra_index_url", extra_index_url), bool(pre)))

    def pip_install_from_pyproject(self, pyproject_toml: str | os.PathLike[str],
                                   optional_dependencies: Sequence[str] = ()) -> Image:
        """Install `[project] dependencies` (and the named optional groups) of a pyproject.toml."""
        if _in_container():
            return self
        path = Path(pyproject_toml).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"pip_install_from_pyproject({str(pyproject_toml)!r}): no such file (looked at {path}).")
        project = _load_toml(path).get("project", {})
        packages = list(project.get("dependencies", []))
        groups = project.get("optional-dependencies", {})
        for group in optional_dependencies:
            if group not in groups:
                raise ValueError(f"{path} has no optional dependency group {group!r}; it has {sorted(groups) or 'none'}.")
            packages.extend(groups[group])
        return self.pip_install(*packages)

    # -- the system ------------------------------------------------------------------------------
    def apt_install(self, *packages: str | Iterable[str]) -> Image:
        names = _flatten(packages, "apt_install")
        for name in names:
            if not _APT_NAME.fullmatch(name):
                raise ValueError(f"apt_install(): {name!r} is not a Debian package name (like 'curl' or 'libpq-dev').")
        return self._add(AptInstall(tuple(sorted(set(names))))) if names else self

    def run_commands(self, *commands: str | Iterable[str]) -> Image:
        """Shell commands run at build time with the image's environment active, in order."""
        cmds = _flatten(commands, "run_commands")
        return self._add(RunCommands(tuple(cmds))) if cmds else self

    def env(self, vars: dict[str, str]) -> Image:
        if not isinstance(vars, dict):
            raise TypeError(f'env() takes a dict of strings, got {vars!r}. Write for example `.env({{"MODE": "prod"}})`.')
        for key, value in vars.items():
            if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                raise ValueError(f"env(): {key!r} is not a valid environment variable name (letters, digits, _).")
            if not isinstance(value, str):
                raise TypeError(f"env(): the value of {key} must be a string, got {value!r}. Write str(...) around it.")
            if "\n" in value or "\x00" in value:
                raise ValueError(f"env(): the value of {key} must be one line.")
        return self._add(Env(tuple(sorted(vars.items())))) if vars else self

    def workdir(self, path: str | PurePosixPath) -> Image:
        """The containers' working directory (and where relative remote paths start)."""
        return self._add(Workdir(_remote(self._spec.workdir, path, "workdir()")))

    # -- local files (mounts) --------------------------------------------------------------------
    def add_local_file(self, local_path: str | os.PathLike[str], remote_path: str | PurePosixPath) -> Image:
        remote = str(remote_path)
        local = Path(local_path).expanduser().resolve()
        if remote.endswith("/"):
            remote += local.name
        sha256 = None
        if not _in_container():
            if not local.is_file():
                raise FileNotFoundError(f"add_local_file({str(local_path)!r}, ...): no such file (looked at {local}).")
            sha256 = file_sha256(local)
        return self._add(AddLocalFile(str(local), _remote(self._spec.workdir, remote, "remote_path"), sha256))

    def add_local_dir(self, local_path: str | os.PathLike[str], remote_path: str | PurePosixPath,
                      ignore: Ignore = ()) -> Image:
        local = Path(local_path).expanduser().resolve()
        files = None
        if not _in_container():
            if not local.is_dir():
                raise NotADirectoryError(f"add_local_dir({str(local_path)!r}, ...): no such folder (looked at {local}).")
            files = _walk(local, _ignored(ignore))
        return self._add(AddLocalDir(str(local), _remote(self._spec.workdir, remote_path, "remote_path"), files))

    def add_local_python_source(self, *modules: str) -> Image:
        """Local Python packages or modules, found as `import` would find them, at /root/<name>."""
        image = self
        for module in modules:
            if not isinstance(module, str) or not _MODULE.fullmatch(module):
                raise ValueError(f"add_local_python_source(): {module!r} is not a module name like 'helpers'.")
            image = image._add(_python_source(module))
        return image

    # -- values --------------------------------------------------------------------------------
    def _add(self, step: Step) -> Image:
        return Image(self._spec.then(step))

    @property
    def spec(self) -> ImageSpec:
        return self._spec

    @property
    def hash(self) -> str:
        return self._spec.hash

    @classmethod
    def from_spec(cls, data: dict[str, Any]) -> Image:
        """The image a spec's JSON form (`ImageSpec.to_data()`) describes."""
        return cls(ImageSpec.from_data(data))

    def dockerfile(self) -> DockerBuild:
        return self._spec.dockerfile()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        version = self._spec.python_version
        out = f"Image.debian_slim({version!r})" if version else "Image.debian_slim()"
        return out + "".join(step.call() for step in self._spec.steps)


def _python_source(module: str) -> AddLocalPythonSource:
    """Where `import module` would load it from (a package folder or a .py file): .py files only."""
    top = module.split(".")[0]
    remote = f"{ROOT}/{module.replace('.', '/')}"
    if _in_container():
        return AddLocalPythonSource("", remote, None, module)
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or (found.origin in (None, "built-in", "frozen") and not found.submodule_search_locations):
        raise ModuleNotFoundError(f"add_local_python_source({module!r}): no module named {module!r} is importable here. "
                                  f"Put {top}/ or {top}.py beside your script, or on PYTHONPATH.")
    if found.submodule_search_locations:  # a package: its folder
        local = Path(next(iter(found.submodule_search_locations))).resolve()
        files = _walk(local, lambda rel: "__pycache__" in rel.parts or (rel.suffix != ".py" and not (local / rel).is_dir()))
    else:
        local = Path(str(found.origin)).resolve()
        if local.suffix != ".py":
            raise ValueError(f"add_local_python_source({module!r}): {local} is not Python source (a .py file or package).")
        remote += ".py"
        files = (("", file_sha256(local)),)
    return AddLocalPythonSource(str(local), remote, files, module)


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise RuntimeError("pip_install_from_pyproject() needs Python 3.11+ or `pip install tomli`.") from None
    with path.open("rb") as f:
        return tomllib.load(f)


__all__ = ["MOUNT_BLOBS", "ROOT", "ContextFile", "DockerBuild", "Image", "ImageSpec", "default_python", "file_sha256"]

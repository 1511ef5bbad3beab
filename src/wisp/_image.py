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
import json
import os
import posixpath
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

_PYTHON_VERSION = re.compile(r"3\.\d+(\.\d+)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.\-]*(:[a-z0-9]+)?([=<>][A-Za-z0-9.+:~\-]*)?")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

ROOT = "/root"  # the code folder and default working directory of every container (as in Modal)
MOUNT_BLOBS = ".wisp-mounts"  # where a deploy's tarball carries local files, named by their sha256
BUILD_OPS = frozenset({"pip_install", "uv_pip_install", "pip_install_from_requirements", "apt_install", "run_commands"})
MOUNT_OPS = frozenset({"add_local_file", "add_local_dir", "add_local_python_source"})
_MERGED_OPS = frozenset({"pip_install", "uv_pip_install", "apt_install", "run_commands", "env", "workdir"})

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


def _walk(root: Path, ignored: Callable[[Path], bool]) -> list[list[str]]:
    """[relative path, sha256] of the files below root, sorted; symlinked folders are not followed."""
    files: list[list[str]] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not ignored((here / d).relative_to(root)) and not (here / d).is_symlink())
        for name in names:
            rel = (here / name).relative_to(root)
            if not ignored(rel) and (here / name).is_file():
                files.append([rel.as_posix(), file_sha256(here / name)])
    return sorted(files)


class Image:
    """An environment for functions: `Image.debian_slim().pip_install("boto3")`.

    Every builder method returns a new Image; the spec is plain data, so two images with the same
    packages (in any order) hash the same and share one built environment.
    """

    __slots__ = ("_spec",)

    def __init__(self, spec: dict[str, Any]) -> None:
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
        return cls({"base": "debian_slim", "python_version": python_version, "steps": []})

    # -- Python packages -------------------------------------------------------------------------
    def pip_install(self, *packages: str | Iterable[str], index_url: str | None = None,
                    extra_index_url: str | None = None, pre: bool = False) -> Image:
        return self._install("pip_install", packages, index_url, extra_index_url, pre)

    def uv_pip_install(self, *packages: str | Iterable[str], index_url: str | None = None,
                       extra_index_url: str | None = None, pre: bool = False) -> Image:
        return self._install("uv_pip_install", packages, index_url, extra_index_url, pre)

    def _install(self, op: str, packages: tuple[Any, ...], index_url: Any, extra_index_url: Any, pre: Any) -> Image:
        names = _flatten(packages, op)
        if not names:
            return self
        return self._add({"op": op, "packages": sorted(set(names)), "index_url": _optional_str("index_url", index_url),
                          "extra_index_url": _optional_str("extra_index_url", extra_index_url), "pre": bool(pre)})

    def pip_install_from_requirements(self, requirements_txt: str | os.PathLike[str], *, index_url: str | None = None,
                                      extra_index_url: str | None = None, pre: bool = False) -> Image:
        """Install a requirements file; its contents are read now and travel in the spec."""
        if _in_container():
            return self
        path = Path(requirements_txt).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"pip_install_from_requirements({str(requirements_txt)!r}): no such file "
                                    f"(looked at {path}). Relative paths start from the current directory.")
        content = path.read_text()
        return self._add({"op": "pip_install_from_requirements", "name": path.name, "content": content,
                          "index_url": _optional_str("index_url", index_url),
                          "extra_index_url": _optional_str("extra_index_url", extra_index_url), "pre": bool(pre)})

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
        return self._add({"op": "apt_install", "packages": sorted(set(names))}) if names else self

    def run_commands(self, *commands: str | Iterable[str]) -> Image:
        """Shell commands run at build time with the image's environment active, in order."""
        cmds = _flatten(commands, "run_commands")
        return self._add({"op": "run_commands", "commands": cmds}) if cmds else self

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
        return self._add({"op": "env", "vars": dict(sorted(vars.items()))}) if vars else self

    def workdir(self, path: str | PurePosixPath) -> Image:
        """The containers' working directory (and where relative remote paths start)."""
        return self._add({"op": "workdir", "path": _remote(self._workdir(), path, "workdir()")})

    # -- local files (mounts) --------------------------------------------------------------------
    def add_local_file(self, local_path: str | os.PathLike[str], remote_path: str | PurePosixPath) -> Image:
        remote = str(remote_path)
        local = Path(local_path).expanduser().resolve()
        if remote.endswith("/"):
            remote += local.name
        step: dict[str, Any] = {"op": "add_local_file", "local": str(local),
                                "remote": _remote(self._workdir(), remote, "remote_path")}
        if not _in_container():
            if not local.is_file():
                raise FileNotFoundError(f"add_local_file({str(local_path)!r}, ...): no such file (looked at {local}).")
            step["sha256"] = file_sha256(local)
        return self._add(step)

    def add_local_dir(self, local_path: str | os.PathLike[str], remote_path: str | PurePosixPath,
                      ignore: Ignore = ()) -> Image:
        local = Path(local_path).expanduser().resolve()
        step: dict[str, Any] = {"op": "add_local_dir", "local": str(local),
                                "remote": _remote(self._workdir(), remote_path, "remote_path")}
        if not _in_container():
            if not local.is_dir():
                raise NotADirectoryError(f"add_local_dir({str(local_path)!r}, ...): no such folder (looked at {local}).")
            step["files"] = _walk(local, _ignored(ignore))
        return self._add(step)

    def add_local_python_source(self, *modules: str) -> Image:
        """Local Python packages or modules, found as `import` would find them, at /root/<name>."""
        image = self
        for module in modules:
            if not isinstance(module, str) or not _MODULE.fullmatch(module):
                raise ValueError(f"add_local_python_source(): {module!r} is not a module name like 'helpers'.")
            image = image._add(_python_source(module))
        return image

    # -- values --------------------------------------------------------------------------------
    def _add(self, step: dict[str, Any]) -> Image:
        steps = self._spec["steps"]
        if step["op"] in BUILD_OPS and any(s["op"] in MOUNT_OPS for s in steps):
            raise ValueError(
                f"{step['op']}() comes after add_local_*() in this image. Local files are mounted when a container "
                "starts, not built into the image, so call add_local_file/add_local_dir/add_local_python_source last: "
                "then editing them never rebuilds the image."
            )
        last = steps[-1] if steps else None
        if last is not None and last["op"] == step["op"] and step["op"] in _MERGED_OPS and _options(last) == _options(step):
            step = _merge(last, step)
            steps = steps[:-1]
        return Image({**self._spec, "steps": [*steps, step]})

    def _workdir(self) -> str:
        return next((s["path"] for s in reversed(self._spec["steps"]) if s["op"] == "workdir"), ROOT)

    @property
    def spec(self) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(self._spec))
        return copy

    @property
    def hash(self) -> str:
        return spec_hash(self._spec)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Image:
        spec = json.loads(json.dumps(spec))
        if "steps" not in spec:  # the first spec format: {"base", "python_version", "pip": [...]}
            pip = spec.pop("pip", [])
            spec["steps"] = [{"op": "pip_install", "packages": sorted(set(pip)), "index_url": None,
                              "extra_index_url": None, "pre": False}] if pip else []
        return cls(spec)

    def dockerfile(self) -> DockerBuild:
        return render_dockerfile(self._spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        version = self._spec["python_version"]
        out = f"Image.debian_slim({version!r})" if version else "Image.debian_slim()"
        return out + "".join(_step_repr(step) for step in self._spec["steps"])


def _options(step: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(step.get(k) for k in ("index_url", "extra_index_url", "pre"))


def _merge(last: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """Consecutive steps of one kind are one step, so `.pip_install("a").pip_install("b")` is `.pip_install("a", "b")`."""
    if step["op"] == "run_commands":
        return {**last, "commands": [*last["commands"], *step["commands"]]}
    if step["op"] == "workdir":
        return step
    if step["op"] == "env":
        return {**last, "vars": dict(sorted({**last["vars"], **step["vars"]}.items()))}
    return {**last, "packages": sorted(set(last["packages"]) | set(step["packages"]))}


def _step_repr(step: dict[str, Any]) -> str:
    op = step["op"]
    if op in ("pip_install", "uv_pip_install", "apt_install"):
        args = [repr(p) for p in step["packages"]]
        args += [f"{k}={step[k]!r}" for k in ("index_url", "extra_index_url") if step.get(k)]
        args += ["pre=True"] if step.get("pre") else []
        return f".{op}({', '.join(args)})"
    if op == "pip_install_from_requirements":
        return f".pip_install_from_requirements({step['name']!r})"
    if op == "run_commands":
        return f".run_commands({', '.join(repr(c) for c in step['commands'])})"
    if op == "env":
        return f".env({step['vars']!r})"
    if op == "workdir":
        return f".workdir({step['path']!r})"
    if op == "add_local_python_source":
        return f".add_local_python_source({step['module']!r})"
    return f".{op}({step['local']!r}, {step['remote']!r})"


def _python_source(module: str) -> dict[str, Any]:
    """Where `import module` would load it from (a package folder or a .py file): .py files only."""
    top = module.split(".")[0]
    remote = f"{ROOT}/{module.replace('.', '/')}"
    step: dict[str, Any] = {"op": "add_local_python_source", "module": module, "local": "", "remote": remote}
    if _in_container():
        return step
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
        files = [["", file_sha256(local)]]
    return {**step, "local": str(local), "remote": remote, "files": files}


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


# -- what the spec says, for the CLI, the builder and the tests ---------------------------------
def spec_hash(spec: dict[str, Any]) -> str:
    """Covers the whole chain and the contents of local files, but not where they are locally."""
    spec = Image.from_spec(spec)._spec
    steps = [{k: v for k, v in step.items() if k != "local"} for step in spec["steps"]]
    canonical = json.dumps({**spec, "steps": steps}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def local_files(spec: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(local path, container path, sha256) of every file the image mounts."""
    for step in spec.get("steps", []):
        if step["op"] == "add_local_file":
            yield step["local"], step["remote"], step["sha256"]
        elif step["op"] in ("add_local_dir", "add_local_python_source"):
            for rel, sha in step.get("files", []):
                yield (posixpath.join(step["local"], rel) if rel else step["local"],
                       posixpath.join(step["remote"], rel) if rel else step["remote"], sha)


def requested_packages(spec: dict[str, Any]) -> list[str]:
    """The Python requirements named by the image (install steps and requirements files)."""
    out: list[str] = []
    for step in Image.from_spec(spec)._spec["steps"]:
        if step["op"] in ("pip_install", "uv_pip_install"):
            out.extend(step["packages"])
        elif step["op"] == "pip_install_from_requirements":
            out.extend(line.split("#")[0].strip() for line in step["content"].splitlines()
                       if line.split("#")[0].strip() and not line.strip().startswith("-"))
    return out


def image_env(spec: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for step in spec.get("steps", []):
        if step["op"] == "env":
            env.update(step["vars"])
    return env


def image_workdir(spec: dict[str, Any]) -> str:
    return Image.from_spec(spec)._workdir()


# -- Dockerfile rendering -------------------------------------------------------------------------
@dataclass(frozen=True)
class ContextFile:
    """One file of the build context: copied from `source` (a local file) or holding `content`."""

    path: str
    source: str | None = None
    content: str | None = None


@dataclass(frozen=True)
class DockerBuild:
    dockerfile: str
    context: tuple[ContextFile, ...]


def default_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def render_dockerfile(spec: dict[str, Any]) -> DockerBuild:
    """The image as a Dockerfile plus its build context, for container backends.

    The wisp agent is not part of it: a container backend adds its own layer on top.
    """
    spec = Image.from_spec(spec)._spec
    lines = [f"FROM python:{spec['python_version'] or default_python()}-slim-bookworm", f"WORKDIR {ROOT}"]
    context: list[ContextFile] = []
    has_uv = False
    for index, step in enumerate(spec["steps"]):
        op = step["op"]
        if op == "uv_pip_install" and not has_uv:
            lines.append("RUN python -m pip install --no-cache-dir uv")
            has_uv = True
        lines.extend(_render_step(index, step, context))
    return DockerBuild("\n".join(lines) + "\n", tuple(context))


def _pip_options(step: dict[str, Any], uv: bool) -> list[str]:
    out = []
    if step.get("index_url"):
        out.append(f"--index-url {shlex.quote(step['index_url'])}")
    if step.get("extra_index_url"):
        out.append(f"--extra-index-url {shlex.quote(step['extra_index_url'])}")
    if step.get("pre"):
        out.append("--prerelease allow" if uv else "--pre")
    return out


def _render_step(index: int, step: dict[str, Any], context: list[ContextFile]) -> list[str]:
    op = step["op"]
    if op == "pip_install":
        args = ["python -m pip install --no-cache-dir", *_pip_options(step, False), *map(shlex.quote, step["packages"])]
        return ["RUN " + " ".join(args)]
    if op == "uv_pip_install":
        args = ["uv pip install --system --compile-bytecode", *_pip_options(step, True), *map(shlex.quote, step["packages"])]
        return ["RUN " + " ".join(args)]
    if op == "pip_install_from_requirements":
        name = f"context/{index}/{step['name']}"
        context.append(ContextFile(name, content=step["content"]))
        target = f"/.wisp/{index}/{step['name']}"
        args = ["python -m pip install --no-cache-dir", *_pip_options(step, False), "-r", shlex.quote(target)]
        return [_copy(name, target), "RUN " + " ".join(args)]
    if op == "apt_install":
        packages = " ".join(map(shlex.quote, step["packages"]))
        return ["RUN apt-get update && apt-get install -y --no-install-recommends "
                f"{packages} && rm -rf /var/lib/apt/lists/*"]
    if op == "run_commands":  # a multi-line command needs a heredoc (BuildKit)
        return [f"RUN {c}" if "\n" not in c else f"RUN <<'WISP_EOF'\n{c}\nWISP_EOF" for c in step["commands"]]
    if op == "env":
        return ["ENV " + " ".join(f"{k}={_docker_quote(v)}" for k, v in step["vars"].items())]
    if op == "workdir":
        return [f"WORKDIR {step['path']}"]
    if op == "add_local_file":
        name = f"context/{index}/{posixpath.basename(step['remote'])}"
        context.append(ContextFile(name, source=step["local"]))
        return [_copy(name, step["remote"])]
    # add_local_dir, add_local_python_source
    files = step.get("files", [])
    if len(files) == 1 and files[0][0] == "":  # a single-module python source
        name = f"context/{index}/{posixpath.basename(step['remote'])}"
        context.append(ContextFile(name, source=step["local"]))
        return [_copy(name, step["remote"])]
    for rel, _ in files:
        context.append(ContextFile(f"context/{index}/{rel}", source=posixpath.join(step["local"], rel)))
    return [_copy(f"context/{index}/", step["remote"].rstrip("/") + "/")]


def _copy(source: str, dest: str) -> str:
    """`COPY a b`, or the JSON form when a path has spaces or quotes."""
    if any(c.isspace() or c in "\"'\\" for c in source + dest):
        return f"COPY {json.dumps([source, dest])}"
    return f"COPY {source} {dest}"


def _docker_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'

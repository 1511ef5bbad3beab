"""The steps of an image, one frozen value per kind, and `ImageSpec`, the typed chain of them.

Each step kind knows everything about itself: its JSON form (`to_data`/`from_data`, the wire and
SQLite format), its part of the image's hash, how it merges with a following step of its kind,
its display text, its Dockerfile lines, the local files it mounts and the Python requirements it
names. Adding a kind is one class here (registered in `STEP_KINDS`) and, for a build step, one
handler in the server's builder (`server/images.py`).

Three roles, set by `role`:
- `build` steps shape the environment (packages, commands): they make the build key;
- `config` steps (`env`, `workdir`) configure containers; trailing ones never rebuild;
- `mount` steps (local files) are placed in the app's folder when a version is deployed; they
  come after every build step, so editing them never rebuilds.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import posixpath
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

ROOT = "/root"  # the code folder and default working directory of every container (as in Modal)
Role = Literal["build", "config", "mount"]
Files = tuple[tuple[str, str], ...]  # (path relative to the step's folder, sha256); "" is the file itself


# -- Dockerfile rendering ---------------------------------------------------------------------------
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


@dataclass
class DockerContext:
    """What rendering the steps so far has collected: the build context and the one-time lines."""

    files: list[ContextFile] = field(default_factory=list)
    done: set[str] = field(default_factory=set)

    def once(self, line: str) -> list[str]:
        if line in self.done:
            return []
        self.done.add(line)
        return [line]


def _copy(source: str, dest: str) -> str:
    """`COPY a b`, or the JSON form when a path has spaces or quotes."""
    if any(c.isspace() or c in "\"'\\" for c in source + dest):
        return f"COPY {json.dumps([source, dest])}"
    return f"COPY {source} {dest}"


def _docker_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


# -- steps ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """A step of an image. Fields are the JSON keys (tuples become lists); a field whose value is
    None and whose default is None is left out, as local files read inside a container are."""

    op: ClassVar[str]
    role: ClassVar[Role]

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None and f.metadata.get("omit_none"):
                continue
            data[f.name] = _plain(value)
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Step:
        return cls(**{f.name: _frozen(data[f.name]) for f in dataclasses.fields(cls) if f.name in data})

    def hash_data(self) -> dict[str, Any]:
        """The step's part of the image hash: where local files are on the caller's machine is not."""
        data = self.to_data()
        data.pop("local", None)
        return data

    def merged(self, later: Step) -> Step | None:
        """One step for this and the `later` one that follows it, if the two merge."""
        return None

    def call(self) -> str:
        """The builder call that makes this step, as `Image.__repr__` shows it."""
        raise NotImplementedError

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        raise NotImplementedError

    def local_files(self) -> Iterator[tuple[str, str, str]]:
        """(local path, container path, sha256) of each file the step mounts."""
        return iter(())

    def requirements(self) -> list[str]:
        """The Python requirements the step names."""
        return []


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _omit_none() -> Any:
    return field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True)
class PipInstall(Step):
    op: ClassVar[str] = "pip_install"
    role: ClassVar[Role] = "build"
    packages: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_url: str | None = None
    pre: bool = False

    def merged(self, later: Step) -> Step | None:
        if type(later) is not type(self) or _options(later) != _options(self):
            return None
        assert isinstance(later, PipInstall)
        return dataclasses.replace(self, packages=tuple(sorted(set(self.packages) | set(later.packages))))

    def call(self) -> str:
        args = [repr(p) for p in self.packages]
        args += [f"{k}={getattr(self, k)!r}" for k in ("index_url", "extra_index_url") if getattr(self, k)]
        args += ["pre=True"] if self.pre else []
        return f".{self.op}({', '.join(args)})"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        args = ["python -m pip install --no-cache-dir", *_pip_options(self, uv=False), *map(shlex.quote, self.packages)]
        return ["RUN " + " ".join(args)]

    def requirements(self) -> list[str]:
        return list(self.packages)


@dataclass(frozen=True)
class UvPipInstall(PipInstall):
    op: ClassVar[str] = "uv_pip_install"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        args = ["uv pip install --system --compile-bytecode", *_pip_options(self, uv=True), *map(shlex.quote, self.packages)]
        return [*context.once("RUN python -m pip install --no-cache-dir uv"), "RUN " + " ".join(args)]


@dataclass(frozen=True)
class PipInstallFromRequirements(Step):
    op: ClassVar[str] = "pip_install_from_requirements"
    role: ClassVar[Role] = "build"
    name: str = "requirements.txt"
    content: str = ""
    index_url: str | None = None
    extra_index_url: str | None = None
    pre: bool = False

    def call(self) -> str:
        return f".pip_install_from_requirements({self.name!r})"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        name = f"context/{index}/{self.name}"
        context.files.append(ContextFile(name, content=self.content))
        target = f"/.wisp/{index}/{self.name}"
        args = ["python -m pip install --no-cache-dir", *_pip_options(self, uv=False), "-r", shlex.quote(target)]
        return [_copy(name, target), "RUN " + " ".join(args)]

    def requirements(self) -> list[str]:
        lines = (line.split("#")[0].strip() for line in self.content.splitlines() if not line.strip().startswith("-"))
        return [line for line in lines if line]

    @property
    def file_name(self) -> str:
        """Where the builder writes the contents: named by them, so two files never collide."""
        return f"{hashlib.sha256(self.content.encode()).hexdigest()[:12]}-{self.name}"


@dataclass(frozen=True)
class AptInstall(Step):
    op: ClassVar[str] = "apt_install"
    role: ClassVar[Role] = "build"
    packages: tuple[str, ...] = ()

    def merged(self, later: Step) -> Step | None:
        if not isinstance(later, AptInstall):
            return None
        return AptInstall(tuple(sorted(set(self.packages) | set(later.packages))))

    def call(self) -> str:
        return f".apt_install({', '.join(map(repr, self.packages))})"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        packages = " ".join(map(shlex.quote, self.packages))
        return [f"RUN apt-get update && apt-get install -y --no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*"]


@dataclass(frozen=True)
class RunCommands(Step):
    op: ClassVar[str] = "run_commands"
    role: ClassVar[Role] = "build"
    commands: tuple[str, ...] = ()

    def merged(self, later: Step) -> Step | None:
        return RunCommands((*self.commands, *later.commands)) if isinstance(later, RunCommands) else None

    def call(self) -> str:
        return f".run_commands({', '.join(map(repr, self.commands))})"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:  # a multi-line command needs a heredoc (BuildKit)
        return [f"RUN {c}" if "\n" not in c else f"RUN <<'WISP_EOF'\n{c}\nWISP_EOF" for c in self.commands]


@dataclass(frozen=True)
class Env(Step):
    op: ClassVar[str] = "env"
    role: ClassVar[Role] = "config"
    vars: tuple[tuple[str, str], ...] = ()  # sorted by name

    def to_data(self) -> dict[str, Any]:
        return {"op": self.op, "vars": dict(self.vars)}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Step:
        return cls(tuple(sorted(data["vars"].items())))

    def merged(self, later: Step) -> Step | None:
        return Env(tuple(sorted({**dict(self.vars), **dict(later.vars)}.items()))) if isinstance(later, Env) else None

    def call(self) -> str:
        return f".env({dict(self.vars)!r})"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        return ["ENV " + " ".join(f"{k}={_docker_quote(v)}" for k, v in self.vars)]


@dataclass(frozen=True)
class Workdir(Step):
    op: ClassVar[str] = "workdir"
    role: ClassVar[Role] = "config"
    path: str = ROOT

    def merged(self, later: Step) -> Step | None:
        return later if isinstance(later, Workdir) else None

    def call(self) -> str:
        return f".workdir({self.path!r})"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        return [f"WORKDIR {self.path}"]


@dataclass(frozen=True)
class AddLocalFile(Step):
    op: ClassVar[str] = "add_local_file"
    role: ClassVar[Role] = "mount"
    local: str = ""
    remote: str = ""
    sha256: str | None = _omit_none()  # None inside a container, where the file is not read again

    def call(self) -> str:
        return f".add_local_file({self.local!r}, {self.remote!r})"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        name = f"context/{index}/{posixpath.basename(self.remote)}"
        context.files.append(ContextFile(name, source=self.local))
        return [_copy(name, self.remote)]

    def local_files(self) -> Iterator[tuple[str, str, str]]:
        yield self.local, self.remote, self.sha256 or ""


@dataclass(frozen=True)
class AddLocalDir(Step):
    op: ClassVar[str] = "add_local_dir"
    role: ClassVar[Role] = "mount"
    local: str = ""
    remote: str = ""
    files: Files | None = _omit_none()  # noqa: RUF009 (a field() spec, not a value)  None inside a container

    def call(self) -> str:
        return f".{self.op}({self.local!r}, {self.remote!r})"

    def dockerfile(self, index: int, context: DockerContext) -> list[str]:
        files = self.files or ()
        if len(files) == 1 and files[0][0] == "":  # a single-module python source
            name = f"context/{index}/{posixpath.basename(self.remote)}"
            context.files.append(ContextFile(name, source=self.local))
            return [_copy(name, self.remote)]
        for rel, _ in files:
            context.files.append(ContextFile(f"context/{index}/{rel}", source=posixpath.join(self.local, rel)))
        return [_copy(f"context/{index}/", self.remote.rstrip("/") + "/")]

    def local_files(self) -> Iterator[tuple[str, str, str]]:
        for rel, sha in self.files or ():
            yield (posixpath.join(self.local, rel) if rel else self.local,
                   posixpath.join(self.remote, rel) if rel else self.remote, sha)


@dataclass(frozen=True)
class AddLocalPythonSource(AddLocalDir):
    """A package's folder (its .py files) or a single module's file, at /root/<name>."""

    op: ClassVar[str] = "add_local_python_source"
    module: str = ""

    def call(self) -> str:
        return f".add_local_python_source({self.module!r})"


STEP_KINDS: dict[str, type[Step]] = {kind.op: kind for kind in (
    PipInstall, UvPipInstall, PipInstallFromRequirements, AptInstall, RunCommands, Env, Workdir,
    AddLocalFile, AddLocalDir, AddLocalPythonSource,
)}


def step_from_data(data: dict[str, Any]) -> Step:
    kind = STEP_KINDS.get(data.get("op", ""))
    if kind is None:
        raise ValueError(f"Unknown image step {data.get('op')!r}: this spec was made by a newer wisp; "
                         "upgrade the server to the CLI's version.")
    return kind.from_data(data)


def _options(step: Step) -> tuple[Any, ...]:
    return tuple(getattr(step, k, None) for k in ("index_url", "extra_index_url", "pre"))


def _pip_options(step: PipInstall | PipInstallFromRequirements, uv: bool) -> list[str]:
    out = []
    if step.index_url:
        out.append(f"--index-url {shlex.quote(step.index_url)}")
    if step.extra_index_url:
        out.append(f"--extra-index-url {shlex.quote(step.extra_index_url)}")
    if step.pre:
        out.append("--prerelease allow" if uv else "--pre")
    return out


# -- the chain ------------------------------------------------------------------------------------------
def default_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class ImageSpec:
    """A base and its steps: what `Image` builds up, `FunctionSpec.image` carries and the builder builds."""

    base: str = "debian_slim"
    python_version: str | None = None
    steps: tuple[Step, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {"base": self.base, "python_version": self.python_version, "steps": [s.to_data() for s in self.steps]}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> ImageSpec:
        if "steps" not in data:  # the first spec format: {"base", "python_version", "pip": [...]}
            pip = data.get("pip", [])
            steps: tuple[Step, ...] = (PipInstall(tuple(sorted(set(pip)))),) if pip else ()
        else:
            steps = tuple(step_from_data(s) for s in data["steps"])
        return cls(data.get("base", "debian_slim"), data.get("python_version"), steps)

    def then(self, step: Step) -> ImageSpec:
        """This spec with `step` added (merged into the last step when the two merge)."""
        if step.role == "build" and any(s.role == "mount" for s in self.steps):
            raise ValueError(
                f"{step.op}() comes after add_local_*() in this image. Local files are mounted when a container "
                "starts, not built into the image, so call add_local_file/add_local_dir/add_local_python_source last: "
                "then editing them never rebuilds the image."
            )
        merged = self.steps[-1].merged(step) if self.steps else None
        steps = (*self.steps[:-1], merged) if merged is not None else (*self.steps, step)
        return dataclasses.replace(self, steps=steps)

    @functools.cached_property
    def hash(self) -> str:
        """Covers the whole chain and the contents of local files, but not where they are locally.
        Worked out once per value (it is frozen): `wisp app list` shows it for every function."""
        canonical = json.dumps({"base": self.base, "python_version": self.python_version,
                                "steps": [s.hash_data() for s in self.steps]}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def build_steps(self) -> tuple[Step, ...]:
        """The steps that shape the environment: up to the last build step (later env, workdir and
        local files only configure containers, so changing them never rebuilds)."""
        last = max((i for i, s in enumerate(self.steps) if s.role == "build"), default=-1)
        return self.steps[: last + 1]

    @property
    def workdir(self) -> str:
        return next((s.path for s in reversed(self.steps) if isinstance(s, Workdir)), ROOT)

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for step in self.steps:
            if isinstance(step, Env):
                env.update(step.vars)
        return env

    def local_files(self) -> Iterator[tuple[str, str, str]]:
        """(local path, container path, sha256) of every file the image mounts."""
        for step in self.steps:
            yield from step.local_files()

    def requirements(self) -> list[str]:
        """The Python requirements named by the image (install steps and requirements files)."""
        return [r for step in self.steps for r in step.requirements()]

    def dockerfile(self) -> DockerBuild:
        """The image as a Dockerfile plus its build context, for container backends.

        The wisp agent is not part of it: a container backend adds its own layer on top.
        """
        lines = [f"FROM python:{self.python_version or default_python()}-slim-bookworm", f"WORKDIR {ROOT}"]
        context = DockerContext()
        for index, step in enumerate(self.steps):
            lines.extend(step.dockerfile(index, context))
        return DockerBuild("\n".join(lines) + "\n", tuple(context.files))

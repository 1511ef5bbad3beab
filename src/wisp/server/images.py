"""Local image builder: one virtual environment per image, made with uv, cached by build key.

A build runs in place in `$WISP_HOME/images/<key>/` and counts only once `.complete` has been
written, atomically and last: an interrupted build leaves a folder without it, which nothing
uses and which is cleared before the next build of that key. Building in place rather than in a
temporary folder keeps the absolute paths that `run_commands` and pip write (script shebangs,
`.pth` files) valid. Concurrent requests for one key share one build and see its progress; builds
of different keys run in parallel. Every step reports progress events (plain dicts) that the
control API streams to the CLI. Each command of a build (uv, `run_commands`) runs in the build
sandbox when the server has one (`build_sandbox.py`: a build uid, namespaces, WISP_HOME hidden
but the build's folder, egress only to package indexes); the builder's own file work (the
requirements files, the `.pth`, `.complete`) stays in the server.

The local runtime has no filesystem of its own, so an image's container paths are mapped: `/root`
(the code folder and default working directory, as in Modal) is the app version's folder; other
absolute paths are the host's. Local files may only go below `/root`; `apt_install` can only check
that the host already has the packages. Both fail loudly otherwise.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import wisp

from .._image_steps import AptInstall, Env, ImageSpec, PipInstall, PipInstallFromRequirements, RunCommands, Step
from . import build_sandbox
from .isolation import MINIMAL_PATH, untraversable

# What the container agent imports; pinned to the server's versions so the agent behaves the
# same in every image and uv can install them from its cache.
RUNTIME_PACKAGES = (
    "fastapi", "starlette", "pydantic", "uvicorn", "httptools", "uvloop", "python-multipart", "a2wsgi", "wsproto",
    "cloudpickle",  # arguments and results of calls between functions
)
COMPLETE = ".complete"  # the build's metadata (JSON); its presence is what makes an image usable
LAST_USED = ".last-used"  # touched at each serve/deploy that resolves the image
OUTPUT_TAIL = 60  # lines of a failed step's output in the error message
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")

Progress = Callable[[dict[str, Any]], None]


class ImageBuildError(Exception):
    """A build failed; the message carries the failing step and the tool's output."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str | None:
    match = _NAME.match(requirement)
    return _normalize(match.group(1)) if match else None


@functools.lru_cache(maxsize=1)
def _server_versions() -> tuple[tuple[str, str], ...]:
    found = []
    for package in RUNTIME_PACKAGES:
        try:
            found.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            continue  # uvloop is optional (not on Windows)
    return tuple(found)


def runtime_requirements(user_packages: list[str]) -> list[str]:
    """Pins for the agent's packages, except those the user names (the user's choice wins)."""
    named = {requirement_name(p) for p in user_packages}
    return [f"{package}=={version}" for package, version in _server_versions() if _normalize(package) not in named]


@functools.lru_cache(maxsize=1)
def _wisp_source_root() -> Path:
    return Path(wisp.__file__).resolve().parent.parent


def host_python() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def build_key(spec: ImageSpec) -> str:
    """What the environment depends on: the build steps, the agent's pins, the interpreter, wisp."""
    extra = {
        "base": spec.base,
        "python": spec.python_version or host_python(),
        "steps": [step.to_data() for step in spec.build_steps],
        "runtime": runtime_requirements(spec.requirements()),
        "wisp": str(_wisp_source_root()),
        "format": 2,
    }
    return hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:20]


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _labelled(progress: Progress | None, label: str) -> Progress:
    if progress is None:
        return lambda event: None
    return lambda event: progress({**event, "for": label})


class _SharedBuild:
    """One running build; every requester of the same key listens to it (past events replayed)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.listeners: list[Progress] = []
        self.task: asyncio.Future[None] | None = None

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for listener in list(self.listeners):
            listener(event)

    def listen(self, listener: Progress) -> None:
        for event in self.events:
            listener(event)
        self.listeners.append(listener)


class LocalImageBuilder:
    # Set when containers run as per-app uids: their Python must then be readable by other users.
    readable_by_others = False
    # Set by the server (build_sandbox.configure): how builds are isolated; None runs them as before.
    sandbox: build_sandbox.Sandbox | None = None

    def __init__(self, home: Path) -> None:
        self.root = home / "images"
        self.root.mkdir(parents=True, exist_ok=True)
        self._builds: dict[str, _SharedBuild] = {}
        self._sweep()

    async def ensure(self, spec: ImageSpec, progress: Progress | None = None, label: str = "") -> Path:
        """The image's Python, building the environment first unless it is cached."""
        started = time.perf_counter()
        key = build_key(spec)
        target = self.root / key
        notify = _labelled(progress, label)
        if (target / COMPLETE).exists():
            notify({"event": "cached", "image": key[:12], "seconds": round(time.perf_counter() - started, 6)})
        else:
            build = self._builds.get(key) or self._start(spec, key, target)
            build.listen(notify)
            assert build.task is not None
            # A requester that goes away (a failed sibling build) does not cancel a shared build.
            await asyncio.shield(build.task)
        with contextlib.suppress(OSError):  # only `wisp image list` reads it
            (target / LAST_USED).touch()
        return target / "bin" / "python"

    def _start(self, spec: ImageSpec, key: str, target: Path) -> _SharedBuild:
        build = _SharedBuild()
        self._builds[key] = build
        build.task = asyncio.ensure_future(self._build(spec, key, target, build.emit))
        build.task.add_done_callback(lambda task: (self._builds.pop(key, None), task.cancelled() or task.exception()))
        return build

    async def _build(self, spec: ImageSpec, key: str, target: Path, emit: Progress) -> None:
        if target.exists():  # noqa: ASYNC240 (one stat)  what an interrupted build left: never used, so start afresh
            _discard(target)
        try:
            await _Job(spec, key, target, emit, self.readable_by_others, self.sandbox).run()
        except BaseException:
            _discard(target)
            raise

    # -- wisp image list / prune ------------------------------------------------------------------
    def list_images(self, in_use: dict[str, list[str]]) -> list[dict[str, Any]]:
        out = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            meta = _read_meta(folder)
            last = folder / LAST_USED
            out.append({
                "key": folder.name,
                "state": "ready" if meta is not None else ("building" if folder.name in self._builds else "incomplete"),
                "image": (meta or {}).get("image"),
                "python": (meta or {}).get("python"),
                "packages": (meta or {}).get("packages", []),
                "size": (meta or {}).get("size") or _size(folder),
                "built_at": (meta or {}).get("built_at"),
                "last_used": last.stat().st_mtime if last.exists() else (meta or {}).get("built_at"),
                "used_by": sorted(set(in_use.get(folder.name, []))),
            })
        return out

    def prune(self, in_use: dict[str, list[str]]) -> dict[str, Any]:
        """Remove every image that no running app version uses (and no build is making)."""
        removed, kept = [], []
        for entry in self.list_images(in_use):
            if entry["used_by"] or entry["key"] in self._builds:
                kept.append(entry["key"])
                continue
            _discard(self.root / entry["key"])
            removed.append({"key": entry["key"], "size": entry["size"], "packages": entry["packages"]})
        self._sweep()
        return {"removed": removed, "kept": kept}

    def _sweep(self) -> None:
        """Leftovers: folders being deleted, and the temporary folders of older wisp versions."""
        for folder in self.root.glob(".*"):
            if folder.is_dir() and folder.name.startswith((".trash-", ".building-")):
                shutil.rmtree(folder, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Rename first (atomic), so a folder half deleted is never taken for an image."""
    trash = folder.with_name(f".trash-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta: dict[str, Any] = json.loads((folder / COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    if "key" not in meta:  # written by the first builder: the spec itself
        spec = ImageSpec.from_data(meta)
        return {"image": spec.hash, "packages": spec.requirements(), "python": spec.python_version}
    return meta


def _size(folder: Path) -> int:
    """Bytes on disk, counting hard links (uv links from its cache) once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path, _, names in os.walk(folder):
        for name in names:
            try:
                st = os.lstat(os.path.join(path, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# -- one build ------------------------------------------------------------------------------------
class _Job:
    """The steps of one image's build, each reported as it starts, prints and ends."""

    def __init__(self, spec: ImageSpec, key: str, target: Path, emit: Progress, readable: bool = False,
                 sandbox: build_sandbox.Sandbox | None = None) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self._proxy: build_sandbox.EgressProxy | None = None
        self._refused: list[str] = []  # what the egress proxy turned away, for the error message
        self.readable = readable  # the interpreter must be readable by other users (per-app uids)
        self.key = key
        self.short = key[:12]
        # Where it really lies: a sandboxed build sees its folder only at the resolved path (an
        # `images/` that links elsewhere is below the hidden WISP_HOME).
        self.target = target.resolve() if sandbox is not None else target
        self.emit = emit
        self.python = ""  # the interpreter's version, once found
        self._step = 0
        self._name = ""  # the running step's, for error messages

    def _plan(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        version = self.spec.python_version or host_python()
        agent = runtime_requirements(self.spec.requirements())
        user = list(self.spec.build_steps)
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [(f"create environment (Python {version})", self._venv)]
        first = user[0] if user else None
        if isinstance(first, PipInstall) and not first.index_url:
            # One resolution for the agent's pins and the user's first packages: faster, and a conflict
            # between them fails the build instead of one silently replacing the other's version.
            name = f"{first.op} {' '.join(first.packages)} (+ {len(agent)} for the container agent)"
            steps.append((name, functools.partial(self._uv_install, [*agent, *first.packages], first)))
            user = user[1:]
        else:
            steps.append((f"install the container agent's packages ({len(agent)})", functools.partial(self._uv_install, agent, None)))
        env: dict[str, str] = {}
        for step in user:
            steps.extend(self._actions(step, env))
        return steps

    def _actions(self, step: Step, env: dict[str, str]) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """The builder's one handler per step kind: what the local runtime does for it."""
        if isinstance(step, PipInstall):  # and UvPipInstall: uv installs both
            return [(f"{step.op} {' '.join(step.packages)}", functools.partial(self._uv_install, step.packages, step))]
        if isinstance(step, PipInstallFromRequirements):
            return [(f"pip_install_from_requirements {step.name}", functools.partial(self._requirements, step))]
        if isinstance(step, AptInstall):
            return [(f"apt_install {' '.join(step.packages)}", functools.partial(_check_apt, step.packages))]
        if isinstance(step, RunCommands):
            return [(f"run_commands: {_one_line(c)}", functools.partial(self._command, c, dict(env))) for c in step.commands]
        if isinstance(step, Env):
            env.update(step.vars)  # seen by the run_commands that follow, as Docker's ENV
            return []
        if step.role == "build":
            raise ImageBuildError(f"This server's local builder cannot build `{step.op}` steps; upgrade the server.")
        return []  # workdir configures containers; local files are placed at deploy

    async def run(self) -> None:
        if self.sandbox is None:
            return await self._steps()
        build_sandbox.prepare(self.sandbox, self.target)
        allowed = build_sandbox.allowed_endpoints(self.spec.build_steps, self.sandbox.environ, self.sandbox.pip_configs)
        async with build_sandbox.EgressProxy(allowed, self._refuse) as self._proxy:
            await self._steps()

    def _refuse(self, host: str, port: int) -> None:
        message = build_sandbox.refusal(host, port)
        if message not in self._refused:
            self._refused.append(message)
            self._line(message)

    async def _exec(self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        """One build command: in the build sandbox when the server has one (`env` then adds to the
        sandbox's environment), else as the server's own process."""
        if self.sandbox is None or self._proxy is None:
            return await _run(self._name, argv, self._line, cwd=cwd, env=env)
        mounts = build_sandbox.mounts(self.sandbox, self.target, self._proxy.path)
        try:
            await _run(self._name, build_sandbox.argv(self.sandbox, mounts, argv), self._line, cwd=self.target,
                       env=build_sandbox.environment(self.sandbox, env))
        except ImageBuildError as exc:
            if not self._refused:
                raise
            raise ImageBuildError("\n".join([str(exc), *self._refused])) from None

    async def _steps(self) -> None:
        started = time.perf_counter()
        steps = self._plan()
        self.emit({"event": "build", "image": self.short, "steps": len(steps)})
        for index, (name, action) in enumerate(steps, 1):
            self._step, self._name = index, name
            begun = time.perf_counter()
            self.emit({"event": "step", "image": self.short, "step": index, "steps": len(steps), "name": name})
            try:
                await action()
            except ImageBuildError as exc:
                self.emit({"event": "failed", "image": self.short, "step": index, "steps": len(steps), "name": name,
                           "seconds": round(time.perf_counter() - begun, 3), "error": str(exc)})
                raise
            self.emit({"event": "step_done", "image": self.short, "step": index, "steps": len(steps), "name": name,
                       "seconds": round(time.perf_counter() - begun, 3)})
        self._finish(time.perf_counter() - started)
        self.emit({"event": "built", "image": self.short, "seconds": round(time.perf_counter() - started, 3)})

    def _line(self, line: str) -> None:
        self.emit({"event": "output", "image": self.short, "step": self._step, "line": line})

    @property
    def _bin(self) -> Path:
        return self.target / "bin"

    async def _venv(self) -> None:
        interpreter, self.python = await find_python(self.spec.python_version, readable_by_others=self.readable)
        seed = ["--seed"] if any(isinstance(s, RunCommands) for s in self.spec.steps) else []  # `pip` for commands
        await self._exec([_uv(), "venv", "--relocatable", *seed, "--python", interpreter, str(self.target)])

    async def _uv_install(self, packages: Sequence[str], options: PipInstall | None) -> None:
        if not packages:
            return
        await self._exec([*self._uv_pip(options), *packages])

    async def _requirements(self, step: PipInstallFromRequirements) -> None:
        folder = self.target / ".wisp-build"
        folder.mkdir(exist_ok=True)
        path = folder / step.file_name
        path.write_text(step.content)
        await self._exec([*self._uv_pip(step), "-r", str(path)])

    def _uv_pip(self, options: PipInstall | PipInstallFromRequirements | None) -> list[str]:
        argv = [_uv(), "pip", "install", "--python", str(self._bin / "python"), "--compile-bytecode"]
        if options is not None and options.index_url:
            argv += ["--index-url", options.index_url]
        if options is not None and options.extra_index_url:
            argv += ["--extra-index-url", options.extra_index_url]
        if options is not None and options.pre:
            argv += ["--prerelease", "allow"]
        return argv

    async def _command(self, command: str, env: dict[str, str]) -> None:
        """In the image's folder, with its environment active (its bin, then uv's, first on PATH)."""
        if self.sandbox is not None:  # the sandbox's environment, not the server's
            base = {"PATH": MINIMAL_PATH}
        else:
            base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        path = os.pathsep.join([str(self._bin), str(Path(_uv()).parent), base.get("PATH", os.defpath)])
        extra = {"VIRTUAL_ENV": str(self.target), "PATH": path, **env}
        await self._exec(["/bin/sh", "-c", command], cwd=self.target, env=extra if self.sandbox else {**base, **extra})

    def _finish(self, seconds: float) -> None:
        site = next(self.target.glob("lib/python3*/site-packages"))
        (site / "_wisp_agent.pth").write_text(str(_wisp_source_root()) + "\n")
        meta = {
            "key": self.key, "image": self.spec.hash, "python": self.python, "spec": self.spec.to_data(),
            "packages": self.spec.requirements(), "built_at": time.time(), "seconds": round(seconds, 3),
            "size": _size(self.target),
        }
        tmp = self.target / f"{COMPLETE}.tmp"
        tmp.write_text(json.dumps(meta, sort_keys=True))
        os.replace(tmp, self.target / COMPLETE)  # the commit point


def _one_line(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


async def _check_apt(packages: Sequence[str]) -> None:
    """The local runtime cannot install system packages; it can see that the host has them."""
    missing = []
    for package in packages:
        name = re.split(r"[=<>]", package)[0]
        try:
            proc = await asyncio.create_subprocess_exec(
                "dpkg-query", "-W", "-f=${Status}", name, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
            out, _ = await proc.communicate()
        except FileNotFoundError:  # not a Debian-like host
            out = b""
        if not out.decode().strip().endswith("installed"):
            missing.append(name)
    if missing:
        # Builds run in the build sandbox without root, so the host's packages are all they can have.
        raise ImageBuildError(
            f"Image build step `apt_install {' '.join(packages)}` failed: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed on this machine, and the local builder cannot "
            "install system packages (it has no root file system of the image's own). Install them on the host (`sudo apt-get install "
            f"{' '.join(missing)}`) and deploy again, or drop the step if the app does not need them."
        )


async def _run(step: str, argv: list[str], on_line: Callable[[str], None], *,
               cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run one build command, passing on each output line; kill it if the build is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
        cwd=None if cwd is None else str(cwd), env=env, start_new_session=True, limit=1 << 20,
    )
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL)
    try:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            on_line(line)
        code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
        raise
    if code != 0:
        raise ImageBuildError(f"Image build step `{step}` failed (exit {code}):\n" + "\n".join(tail))


# -- interpreters ---------------------------------------------------------------------------------
def _version_matches(found: str, wanted: str) -> bool:
    return found.split(".")[: len(wanted.split("."))] == wanted.split(".")


async def _output(argv: list[str]) -> str | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
    except OSError:
        return None
    out, _ = await proc.communicate()
    return out.decode().strip() if proc.returncode == 0 else None


async def _python_version(interpreter: str) -> str | None:
    return await _output([interpreter, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])


def _candidates(version: str) -> list[str]:
    """Where interpreters live besides PATH: pyenv's versions, uv's managed Pythons, the usual bins."""
    minor = ".".join(version.split(".")[:2])
    found = []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found += sorted(str(p) for p in pyenv.glob(f"{version}*/bin/python{minor}"))
    uv_home = Path(os.environ.get("UV_PYTHON_INSTALL_DIR", Path.home() / ".local/share/uv/python"))
    found += sorted(str(p) for p in uv_home.glob(f"cpython-{version}*/bin/python{minor}"))
    on_path = shutil.which(f"python{minor}")
    found += [on_path] if on_path else []
    found += [f"{d}/python{minor}" for d in ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin")]
    return list(dict.fromkeys(p for p in found if os.access(p, os.X_OK)))


def closed_to_others(interpreter: str) -> Path | None:
    """The folder that keeps other users (an app's uid) from the interpreter and its standard
    library (beside it), or None."""
    return untraversable(Path(os.path.realpath(interpreter)).parent)


async def find_python(version: str | None, *, readable_by_others: bool = False) -> tuple[str, str]:
    """(interpreter path, its version) for `python_version`; the server's own when None or equal.
    `readable_by_others`: containers run as other uids, so an interpreter under a folder closed
    to them (pyenv's in /root, say) is passed over for another of the same version."""
    host_closed = False  # the server's own interpreter has the version but others cannot read it
    if version is None or _version_matches(host_python(), version):
        if not readable_by_others or closed_to_others(sys.executable) is None:
            return sys.executable, host_python()
        version = version or ".".join(host_python().split(".")[:2])
        host_closed = True
    found = await _output([_uv(), "python", "find", "--python-preference", "system", "--no-python-downloads", version])
    candidates = ([found] if found else []) + _candidates(version)
    passed_over = []
    for candidate in candidates:
        if readable_by_others and (blocked := closed_to_others(candidate)) is not None:
            passed_over.append(f"{candidate} (under {blocked}, closed to other users)")
            continue
        actual = await _python_version(candidate)
        if actual and _version_matches(actual, version):
            return candidate, actual
    if passed_over or host_closed:
        raise ImageBuildError(
            f"Image build step `create environment (Python {version})` failed: containers run as their app's own "
            f"uid, and no Python {version} on this machine is readable by other users "
            f"({'; '.join(passed_over) or sys.executable}). Install one where they can read it (your system's "
            f"python{'.'.join(version.split('.')[:2])} package, or `uv python install {version}` with "
            "UV_PYTHON_INSTALL_DIR=/opt/python), or start the server with WISP_APP_UIDS=0 (containers then share "
            "the server's uid).")
    minor = ".".join(version.split(".")[:2])
    raise ImageBuildError(
        f"Image build step `create environment (Python {version})` failed: no Python {version} interpreter was found "
        f"on this machine for Image.debian_slim(python_version={version!r}). Install it (for example "
        f"`uv python install {version}`, `pyenv install {version}` or your system's python{minor} package), "
        f"or drop python_version to use the server's Python {host_python()}."
    )


BUILDERS: dict[str, type[LocalImageBuilder]] = {
    "local": LocalImageBuilder,  # one venv per image, on this machine (uv); `docker` and `modal` would go here
}


def get_builder(name: str, home: Path) -> LocalImageBuilder:
    """The image builder called `name` (WISP_BUILDER), as runtimes are chosen (STYLE rule 6)."""
    try:
        return BUILDERS[name](home)
    except KeyError:
        raise ValueError(f"Unknown image builder {name!r} (WISP_BUILDER). Choose one of: {', '.join(sorted(BUILDERS))}.") from None


__all__ = ["BUILDERS", "ImageBuildError", "LocalImageBuilder", "build_key", "find_python", "get_builder",
           "runtime_requirements"]

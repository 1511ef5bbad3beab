"""Modal's objects as wisp's specs, without I/O: an image chain's Dockerfile commands as wisp's
typed image steps, a `Function` definition as a wisp function spec, a script's mounts as the
files of an app version. Table-tested; a layer or option wisp cannot honour raises
`Unsupported` naming it and saying what to do instead.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from modal_proto import api_pb2

from ..._gpu import GpuValue
from ..._gpu import canonical as canonical_gpu
from ..._image_steps import (
    Env,
    ImageSpec,
    PipInstall,
    PipInstallFromRequirements,
    RunCommands,
    Step,
    UvPipInstall,
    Workdir,
)
from ..._runtime._load import MODAL_APP_ENV
from .translate import secret_name

ROOT = "/root"
MODAL_VERSION = metadata.version("modal")
ARGS_FOLDER = ".wisp-modal"  # in the version's folder: each function's ContainerArguments


class Unsupported(ValueError):
    """Something in a Modal app that this wisp cannot honour; the message says what and why."""


@dataclass(frozen=True)
class Layer:
    commands: tuple[str, ...]
    context_files: tuple[tuple[str, bytes], ...] = ()


def _python_version(from_line: str) -> str:
    """`FROM python:3.11.12-slim-bookworm` (Modal's debian_slim) -> "3.11"."""
    image = from_line.split(None, 1)[1]
    name, _, tag = image.partition(":")
    version = tag.split("-", 1)[0]
    if name != "python" or "-slim-" not in tag or version.count(".") < 1:
        raise Unsupported(
            f"The image layer `{from_line}` starts from a registry image; wisp's local builder makes "
            "`Image.debian_slim(python_version=...)` images only (from_registry, from_dockerfile and "
            "micromamba need a container builder). Start from modal.Image.debian_slim().")
    return ".".join(version.split(".")[:2])


REQUIREMENTS = "/.requirements.txt"  # where Modal's pip_install_from_requirements copies the file


def _pip_step(command: str, context: dict[str, bytes]) -> Step:
    """`RUN python -m pip install ...` as written by Modal's pip_install (and, with `-r`, by its
    pip_install_from_requirements, whose file came with the layer as a context file)."""
    words = shlex.split(command)[len(("RUN", "python", "-m", "pip", "install")):]
    packages: list[str] = []
    options: dict[str, Any] = {}
    requirements: str | None = None
    it = iter(words)
    for word in it:
        if word in ("--index-url", "--extra-index-url"):
            options[word[2:].replace("-", "_")] = next(it, None)
        elif word == "--pre":
            options["pre"] = True
        elif word == "-r" and REQUIREMENTS in context and next(it, None) == REQUIREMENTS:
            requirements = context[REQUIREMENTS].decode()
        elif word.startswith("-"):
            raise Unsupported(f"The image layer `{command}` passes pip the option {word!r}, which wisp's builder "
                              "does not take. Drop it, or use index_url/extra_index_url/pre.")
        else:
            packages.append(word)
    if requirements is not None:
        return PipInstallFromRequirements(content=requirements, **options)
    return PipInstall(packages=tuple(sorted(packages)), **options)


def _uv_step(command: str) -> Step:
    """`RUN /.uv/uv pip install --python $(command -v python) --compile-bytecode ...` (uv_pip_install)."""
    words = shlex.split(command.replace("$(command -v python)", "PYTHON"))
    packages = [w for w in words[4:] if not w.startswith("-") and w != "PYTHON"]
    return UvPipInstall(packages=tuple(sorted(packages)))


def _layer_steps(layer: Layer) -> list[Step]:
    steps: list[Step] = []
    context = dict(layer.context_files)
    for command in layer.commands:
        keyword, _, rest = command.partition(" ")
        if command == "FROM base" or command.startswith("COPY --from=ghcr.io/astral-sh/uv"):
            continue  # the chain itself, and the uv binary uv_pip_install brings (wisp has its own)
        if command == f"COPY {REQUIREMENTS} {REQUIREMENTS}" and REQUIREMENTS in context:
            continue  # the requirements file: its `pip install -r` takes it from the context
        if command.startswith("RUN python -m pip install "):
            steps.append(_pip_step(command, context))
        elif command.startswith("RUN /.uv/uv pip install "):
            steps.append(_uv_step(command))
        elif keyword == "ENV":
            pairs = [word.split("=", 1) for word in shlex.split(rest)]
            steps.append(Env(tuple(sorted((k, v) for k, v in pairs))))
        elif keyword == "WORKDIR":
            steps.append(Workdir(rest.strip()))
        elif keyword == "RUN":
            steps.append(RunCommands((rest,)))
        else:
            raise Unsupported(f"The image layer `{command}` cannot be built by wisp's local builder (it runs "
                              "pip/uv installs, commands, ENV and WORKDIR). Use the Image methods "
                              "pip_install, uv_pip_install, run_commands, env and workdir instead.")
    return steps


def image_spec(chain: list[Layer]) -> ImageSpec:
    """A function's image chain (the root layer first) as one wisp image."""
    if not chain or not chain[0].commands or not chain[0].commands[0].startswith("FROM "):
        raise Unsupported("The function's image has no base layer; start from modal.Image.debian_slim().")
    python = _python_version(chain[0].commands[0])
    # The root's other commands make Modal's own base (compilers, pip, uv); wisp's base has its own.
    steps = [step for layer in chain[1:] for step in _layer_steps(layer)]
    # Modal's entrypoint runs in the containers, so the image has Modal's client, the server's version
    # of it (as Modal's own images carry the client that deployed them). A web_server function runs
    # wisp's agent with the script's `modal` bound to wisp instead (`function_spec`).
    steps.append(PipInstall(packages=(f"modal=={MODAL_VERSION}",)))
    steps.append(Env(((MODAL_APP_ENV, "1"),)))
    spec = ImageSpec("debian_slim", python)
    for step in steps:
        spec = spec.then(step)  # consecutive steps of one kind merge, as wisp's own Image methods do
    return spec


_WEB_KINDS = {
    api_pb2.WEBHOOK_TYPE_FUNCTION: "webhook",
    api_pb2.WEBHOOK_TYPE_ASGI_APP: "asgi",
    api_pb2.WEBHOOK_TYPE_WSGI_APP: "wsgi",
    api_pb2.WEBHOOK_TYPE_WEB_SERVER: "web_server",
}


def web_spec(config: api_pb2.WebhookConfig) -> dict[str, Any] | None:
    kind = _WEB_KINDS.get(config.type)
    if kind is None:
        return None
    web: dict[str, Any] = {"kind": kind, "label": config.requested_suffix or None,
                           "requires_proxy_auth": config.requires_proxy_auth}
    if kind == "webhook":
        web.update(method=config.method or "GET", docs=config.web_endpoint_docs)
    if kind == "web_server":
        web.update(port=config.web_server_port, startup_timeout=config.web_server_startup_timeout or 5.0)
    return web


def gpu_of(functions: Sequence[api_pb2.Function]) -> GpuValue:
    """The `gpu=` of a Modal function definition, or of its ranked copies (Modal sends a fallback
    list as one definition per GPU), in wisp's canonical form."""
    options = [f"{c.gpu_type}:{c.count or 1}" for f in functions if (c := f.resources.gpu_config).gpu_type]
    if not options:
        return None
    try:
        return canonical_gpu(options[0] if len(options) == 1 else options)
    except ValueError as exc:
        raise Unsupported(f"`{functions[0].function_name}`'s gpu cannot be read: {exc}.") from None


def function_specs(fn: api_pb2.Function, image: ImageSpec,
                   ranked: Sequence[api_pb2.Function] = ()) -> list[dict[str, Any]]:
    """A Modal `Function` definition as wisp's FunctionSpec JSON: one for a function; for an
    @app.cls class (`Model.*`), one per web method (`Model.predict`), as wisp's own @stub.cls
    records them. Its other methods cannot be called through the modal client yet, so a class
    with no web method is refused rather than deployed as nothing."""
    if not fn.is_class:
        return [function_spec(fn, image, ranked)]
    cls = fn.function_name.removesuffix(".*")
    webs = {name: m for name, m in fn.method_definitions.items() if m.webhook_config.type}
    if not webs:
        raise Unsupported(f"The class `{cls}` has no web methods; calling a class's methods through the modal "
                          "client is not supported by wisp yet. Serve them with @modal.fastapi_endpoint(), or "
                          "make them @app.function()s.")
    base = function_spec(fn, image, ranked)
    return [{**base, "name": f"{cls}.{name}", "cls": cls, "method_name": name, "web": web_spec(m.webhook_config)}
            for name, m in webs.items()]


def function_spec(fn: api_pb2.Function, image: ImageSpec, ranked: Sequence[api_pb2.Function] = ()) -> dict[str, Any]:
    """A Modal `Function` definition (not a class) as wisp's FunctionSpec JSON; `ranked`: its
    copies per GPU of a fallback list, if it had one."""
    scaling = fn.autoscaler_settings
    # Modal's entrypoint waits for a web server on the container's eth0 address; without a network
    # namespace per container (issue 15) that is the machine's own, and wisp keeps apps on loopback.
    web_server = fn.webhook_config.type == api_pb2.WEBHOOK_TYPE_WEB_SERVER
    secrets = []
    for sid in fn.secret_ids:
        name = secret_name(sid)
        if name is None:
            raise Unsupported(f"`{fn.function_name}` uses the secret {sid!r}, which is not a named secret of this "
                              "wisp server. Use modal.Secret.from_name(...) with a secret made by "
                              "`modal secret create`.")
        secrets.append({"name": name})
    return {
        "name": fn.function_name,
        "modal_args": None if web_server else arguments_path(fn.function_name),
        "image": image.to_data(),
        "web": web_spec(fn.webhook_config) if fn.HasField("webhook_config") else None,
        "timeout": fn.timeout_secs or 300,
        "container_idle_timeout": scaling.scaledown_window or fn.task_idle_timeout_secs or 60,
        "keep_warm": scaling.min_containers or fn.warm_pool_size,
        "concurrency_limit": scaling.max_containers or fn.concurrency_limit or None,
        "buffer_containers": scaling.buffer_containers,
        "allow_concurrent_inputs": fn.max_concurrent_inputs or 1,
        "target_inputs": fn.target_concurrent_inputs or None,
        "startup_timeout": fn.startup_timeout_secs or 300,
        "secrets": secrets,
        "gpu": gpu_of(ranked or [fn]),
        **resources(fn.resources),
    }


def resources(r: api_pb2.Resources) -> dict[str, Any]:
    """`cpu=`, `memory=` (with the limits of Modal's tuples) and `ephemeral_disk=` as spec fields;
    0 in the proto means unset."""
    return {"cpu": r.milli_cpu / 1000 or None, "cpu_limit": r.milli_cpu_max / 1000 or None,
            "memory": r.memory_mb or None, "memory_limit": r.memory_mb_max or None,
            "ephemeral_disk": r.ephemeral_disk_mb or None}


def arguments_path(function_name: str) -> str:
    """Where a function's ContainerArguments lie in its version's folder (a class: `Model.*` -> Model)."""
    return f"{ARGS_FOLDER}/{function_name.removesuffix('.*')}.args"


def container_arguments(app_id: str, function_id: str, fn: api_pb2.Function,
                        layout: api_pb2.AppLayout) -> api_pb2.ContainerArguments:
    """What Modal's entrypoint reads at start (the task id is filled in per container)."""
    return api_pb2.ContainerArguments(function_id=function_id, app_id=app_id, function_def=fn, app_layout=layout)


def app_layout(functions: dict[str, api_pb2.Function], function_ids: dict[str, str],
               class_ids: dict[str, str]) -> api_pb2.AppLayout:
    """The app's objects as its containers hydrate them: its functions and classes, and any other
    object a function depends on (a secret, say), known by id only."""
    objects = [api_pb2.Object(object_id=fid, function_handle_metadata=api_pb2.FunctionHandleMetadata(
        function_name=fn.function_name, is_method=False, definition_id=fid))
        for fid, fn in functions.items()]
    objects += [api_pb2.Object(object_id=cid, class_handle_metadata=api_pb2.ClassHandleMetadata())
                for cid in class_ids.values()]
    known = {o.object_id for o in objects}
    for fn in functions.values():
        for dep in fn.object_dependencies:
            if dep.object_id not in known:
                known.add(dep.object_id)
                objects.append(api_pb2.Object(object_id=dep.object_id))
    return api_pb2.AppLayout(objects=objects, function_ids=function_ids, class_ids=class_ids)


def version_files(mounted: list[tuple[str, bytes, int]]) -> list[tuple[str, bytes, int]]:
    """(path relative to the version's folder, data, mode) for the mounted files under /root
    (Modal mounts the script's folder and local packages there); others cannot be placed."""
    out = []
    for path, data, mode in mounted:
        if not path.startswith(ROOT + "/"):
            raise Unsupported(f"A mount puts {path} outside {ROOT}; wisp places an app's files under {ROOT} only.")
        out.append((path[len(ROOT) + 1:], data, mode))
    return out

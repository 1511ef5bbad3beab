"""Modal's objects as wisp's specs (modal_api/specs.py): image chains as typed steps, Function
definitions as function specs, mounts as version files."""
from __future__ import annotations

from typing import Any

import pytest
from modal_proto import api_pb2

from wisp._image_steps import (
    Env,
    ImageSpec,
    PipInstall,
    PipInstallFromRequirements,
    RunCommands,
    UvPipInstall,
    Workdir,
)
from wisp.server.modal_api.specs import (
    MODAL_VERSION,
    Layer,
    Unsupported,
    function_spec,
    function_specs,
    image_spec,
    version_files,
)

BASE = Layer(("FROM python:3.11.12-slim-bookworm", "RUN apt-get update",
              "RUN apt-get install -y gcc gfortran build-essential", "RUN pip install --upgrade pip wheel uv",
              'CMD ["sleep", "172800"]'))
MARK = Env((("WISP_MODAL_APP", "1"),))
MODAL = f"modal=={MODAL_VERSION}"  # Modal's entrypoint runs in the containers: the image has the client
CLIENT = PipInstall((MODAL,))


def layer(*commands: str) -> Layer:
    return Layer(("FROM base", *commands))


@pytest.mark.parametrize(("layers", "steps"), [
    ([], (CLIENT, MARK)),
    ([layer("RUN python -m pip install 'fastapi[standard]' requests==2.32.3")],
     (PipInstall(("fastapi[standard]", MODAL, "requests==2.32.3")), MARK)),
    ([layer("RUN python -m pip install b a --index-url https://idx --pre")],
     (PipInstall(("a", "b"), index_url="https://idx", pre=True), CLIENT, MARK)),
    ([layer("COPY --from=ghcr.io/astral-sh/uv:latest /uv /.uv/uv",
            "RUN /.uv/uv pip install --python $(command -v python) --compile-bytecode httpx")],
     (UvPipInstall(("httpx",)), CLIENT, MARK)),
    ([layer("RUN echo hi", "RUN echo two")], (RunCommands(("echo hi", "echo two")), CLIENT, MARK)),
    ([layer("WORKDIR /root/app")], (Workdir("/root/app"), CLIENT, MARK)),
    # consecutive steps of one kind merge, as wisp's own Image methods make them
    ([layer("RUN python -m pip install a"), layer("RUN python -m pip install b"), layer("ENV A=1")],
     (PipInstall(("a", "b")), Env((("A", "1"),)), CLIENT, MARK)),
])
def test_image_chains_become_typed_steps(layers: list[Layer], steps: tuple[Any, ...]) -> None:
    spec = image_spec([BASE, *layers])
    assert spec == ImageSpec("debian_slim", "3.11", steps)


def test_a_requirements_file_comes_with_its_layer() -> None:
    requirements = Layer(("FROM base", "COPY /.requirements.txt /.requirements.txt",
                          "RUN python -m pip install -r /.requirements.txt"),
                         (("/.requirements.txt", b"requests\nflask==3.0\n"),))
    spec = image_spec([BASE, requirements])
    assert spec.steps == (PipInstallFromRequirements(content="requests\nflask==3.0\n"), CLIENT, MARK)


def test_the_python_version_comes_from_the_base() -> None:
    assert image_spec([Layer(("FROM python:3.12.3-slim-bookworm",))]).python_version == "3.12"


@pytest.mark.parametrize(("chain", "named"), [
    ([Layer(("FROM nginx:latest",))], "FROM nginx:latest"),
    ([BASE, layer("COPY /.requirements.txt /.requirements.txt")], "COPY /.requirements.txt"),
    ([BASE, layer('ENTRYPOINT ["x"]')], 'ENTRYPOINT ["x"]'),
    ([BASE, layer("RUN python -m pip install -r /.requirements.txt")], "'-r'"),  # no file came with it
    ([], "no base layer"),
])
def test_layers_wisp_cannot_build_are_named(chain: list[Layer], named: str) -> None:
    with pytest.raises(Unsupported) as caught:
        image_spec(chain)
    assert named in str(caught.value)


def function(**fields: Any) -> api_pb2.Function:
    return api_pb2.Function(function_name="f", module_name="app", **fields)


IMAGE = ImageSpec("debian_slim", "3.11")


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, {"web": None, "timeout": 300, "keep_warm": 0, "concurrency_limit": None, "allow_concurrent_inputs": 1,
          "container_idle_timeout": 60, "buffer_containers": 0, "target_inputs": None, "secrets": []}),
    ({"webhook_config": api_pb2.WebhookConfig(type=api_pb2.WEBHOOK_TYPE_FUNCTION, method="POST",
                                              web_endpoint_docs=True, requires_proxy_auth=True)},
     {"web": {"kind": "webhook", "method": "POST", "docs": True, "label": None, "requires_proxy_auth": True}}),
    ({"webhook_config": api_pb2.WebhookConfig(type=api_pb2.WEBHOOK_TYPE_ASGI_APP, requested_suffix="api")},
     {"web": {"kind": "asgi", "label": "api", "requires_proxy_auth": False}}),
    ({"webhook_config": api_pb2.WebhookConfig(type=api_pb2.WEBHOOK_TYPE_WSGI_APP)},
     {"web": {"kind": "wsgi", "label": None, "requires_proxy_auth": False}}),
    ({"webhook_config": api_pb2.WebhookConfig(type=api_pb2.WEBHOOK_TYPE_WEB_SERVER, web_server_port=8000,
                                              web_server_startup_timeout=10)},
     {"web": {"kind": "web_server", "label": None, "requires_proxy_auth": False, "port": 8000,
              "startup_timeout": 10.0}}),
    ({"timeout_secs": 60, "max_concurrent_inputs": 10, "target_concurrent_inputs": 8,
      "autoscaler_settings": api_pb2.AutoscalerSettings(min_containers=2, max_containers=5, buffer_containers=1,
                                                        scaledown_window=120)},
     {"timeout": 60, "allow_concurrent_inputs": 10, "target_inputs": 8, "keep_warm": 2, "concurrency_limit": 5,
      "buffer_containers": 1, "container_idle_timeout": 120}),
    ({"warm_pool_size": 3, "concurrency_limit": 4, "task_idle_timeout_secs": 30},  # the older fields
     {"keep_warm": 3, "concurrency_limit": 4, "container_idle_timeout": 30}),
    ({"secret_ids": ["st-db", "st-api"]}, {"secrets": [{"name": "db"}, {"name": "api"}]}),
    ({}, {"gpu": None}),
    ({"resources": api_pb2.Resources(gpu_config=api_pb2.GPUConfig(gpu_type="A100-80GB", count=2))},
     {"gpu": "A100-80GB:2"}),
    ({"resources": api_pb2.Resources(gpu_config=api_pb2.GPUConfig(gpu_type="H100!", count=1))}, {"gpu": "H100!"}),
    ({}, {"cpu": None, "cpu_limit": None, "memory": None, "memory_limit": None, "ephemeral_disk": None}),
    ({"resources": api_pb2.Resources(milli_cpu=250, milli_cpu_max=1500, memory_mb=256, memory_mb_max=1024,
                                     ephemeral_disk_mb=2048)},  # cpu=(0.25, 1.5), memory=(256, 1024)
     {"cpu": 0.25, "cpu_limit": 1.5, "memory": 256, "memory_limit": 1024, "ephemeral_disk": 2048}),
])
def test_function_definitions_become_function_specs(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = function_spec(function(**fields), IMAGE)
    assert spec["name"] == "f" and spec["image"] == IMAGE.to_data()
    assert {k: spec[k] for k in expected} == expected


def test_a_gpu_fallback_list_comes_as_ranked_definitions() -> None:
    ranked = [function(resources=api_pb2.Resources(gpu_config=api_pb2.GPUConfig(gpu_type=t, count=1)))
              for t in ("H100", "A100")]
    assert function_spec(ranked[0], IMAGE, ranked)["gpu"] == ("H100", "A100")
    bad = function(resources=api_pb2.Resources(gpu_config=api_pb2.GPUConfig(gpu_type="A 100", count=1)))
    with pytest.raises(Unsupported, match="`f`'s gpu cannot be read"):
        function_spec(bad, IMAGE)


def test_a_class_is_one_spec_per_web_method() -> None:
    web = api_pb2.WebhookConfig(type=api_pb2.WEBHOOK_TYPE_FUNCTION, method="POST")
    fn = function(is_class=True, method_definitions={
        "predict": api_pb2.MethodDefinition(function_name="Model.predict", webhook_config=web),
        "helper": api_pb2.MethodDefinition(function_name="Model.helper")})
    fn.function_name = "Model.*"
    specs = function_specs(fn, IMAGE)
    assert [(s["name"], s["cls"], s["method_name"], s["web"]["method"]) for s in specs] == [
        ("Model.predict", "Model", "predict", "POST")]


@pytest.mark.parametrize(("fields", "named"), [
    ({"is_class": True}, "has no web methods"),
    ({"secret_ids": ["sc-123"]}, "sc-123"),
])
def test_functions_wisp_cannot_run_are_refused(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(Unsupported) as caught:
        function_specs(function(**fields), IMAGE)
    assert named in str(caught.value)


def test_mounted_files_land_in_the_version_folder() -> None:
    files = [("/root/app.py", b"x", 0o644), ("/root/pkg/mod.py", b"y", 0o600)]
    assert version_files(files) == [("app.py", b"x", 0o644), ("pkg/mod.py", b"y", 0o600)]
    with pytest.raises(Unsupported, match="/etc/passwd"):
        version_files([("/etc/passwd", b"", 0o644)])

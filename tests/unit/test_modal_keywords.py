"""Every keyword of Modal's current `App.function`/`App.cls` and web decorators is honoured or
refused with a reason (issue 10, defect 3): never a TypeError, never dropped in silence."""
from __future__ import annotations

from typing import Any

import pytest

import wisp
from wisp._modal_keywords import NO_OPS, REFUSED

# Modal 1.x's App.function keywords (modal-client py/modal/app.py) and their older names.
MODAL_FUNCTION_KEYWORDS = [
    "image", "schedule", "env", "secrets", "gpu", "serialized", "network_file_systems", "volumes", "cpu", "memory",
    "ephemeral_disk", "min_containers", "max_containers", "buffer_containers", "scaledown_window", "proxy",
    "retries", "timeout", "startup_timeout", "name", "is_generator", "cloud", "region", "routing_region",
    "nonpreemptible", "enable_memory_snapshot", "block_network", "restrict_modal_access", "single_use_containers",
    "i6pn", "include_source", "experimental_options", "_experimental_restrict_output", "max_inputs",
    "keep_warm", "concurrency_limit", "container_idle_timeout", "allow_concurrent_inputs",
    "allow_cross_region_volumes", "mounts", "secret", "checkpointing_enabled", "interactive",
    "_experimental_boost", "_experimental_gpus", "_experimental_scheduler_placement",
    "_experimental_buffer_containers", "_experimental_proxy_ip", "_experimental_custom_scaling_factor",
    "_experimental_enable_gpu_snapshot", "_allow_background_volume_commits", "cloud_bucket_mounts",
]
EMPTY = {"volumes": {}, "network_file_systems": {}, "cloud_bucket_mounts": {}, "mounts": [], "secrets": [],
         "secret": None, "experimental_options": {}, "env": {}, "retries": None, "image": None,
         "include_source": True, "wait_for_response": True}


@pytest.mark.parametrize("key", MODAL_FUNCTION_KEYWORDS)
def test_every_modal_function_keyword_is_known(key: str) -> None:
    app = wisp.App("kw")
    value: Any = EMPTY.get(key)
    app.function(**{key: value})(lambda: None)  # a "nothing asked" value always passes


@pytest.mark.parametrize("key", sorted(set(REFUSED) - {"custom_domains"}))
def test_refused_keywords_say_why_and_what_to_do(key: str) -> None:
    with pytest.raises(ValueError, match=rf"`{key}=.*cannot be honoured: .*Instead: "):
        wisp.App("kw").function(**{key: "something"})


@pytest.mark.parametrize("key", sorted(NO_OPS))
def test_no_op_keywords_are_accepted_with_a_value(key: str) -> None:
    wisp.App("kw").function(**{key: 10 if key == "ephemeral_disk" else True})(lambda: None)


def _webs(stub: wisp.Stub) -> list[Any]:
    return [f.web for f in stub.spec(default_name="kw", module="m", stub_attr="app").functions]


@pytest.mark.parametrize("decorator", [wisp.fastapi_endpoint, wisp.asgi_app, wisp.wsgi_app,
                                       lambda **kw: wisp.web_server(8000, **kw)])
def test_web_decorators_record_requires_proxy_auth(decorator: Any) -> None:
    app = wisp.App("kw")

    def private() -> None: ...

    def public() -> None: ...

    app.function()(decorator(requires_proxy_auth=True)(private))
    app.function()(decorator(requires_proxy_auth=False, custom_domains=None, label="x")(public))
    assert [w.requires_proxy_auth for w in _webs(app)] == [True, False]
    with pytest.raises(TypeError, match="requires_proxy_auth` must be True or False"):
        decorator(requires_proxy_auth="yes")
    with pytest.raises(ValueError, match="custom_domains=.*cannot be honoured"):
        decorator(custom_domains=["api.example.com"])


@pytest.mark.parametrize("form", ["webhook", "asgi", "wsgi"])
def test_seed_decorators_take_the_web_keywords_through_kwargs(form: str) -> None:
    stub = wisp.Stub("kw")
    getattr(stub, form)(requires_proxy_auth=True, wait_for_response=True, custom_domains=None)(lambda: None)
    assert _webs(stub)[0].requires_proxy_auth is True
    with pytest.raises(ValueError, match="wait_for_response=False"):
        getattr(stub, form)(wait_for_response=False)


def test_requires_proxy_auth_is_a_web_keyword_only() -> None:
    with pytest.raises(TypeError, match="requires_proxy_auth"):
        wisp.App("kw").function(requires_proxy_auth=True)
    with pytest.raises(ValueError, match="wait_for_response=False"):
        wisp.fastapi_endpoint(wait_for_response=False)


def test_env_reaches_the_functions_image_without_a_rebuild() -> None:
    app = wisp.App("kw")

    @app.function(env={"MODE": "prod"})
    def f() -> None: ...

    spec = f.__wisp_function__  # type: ignore[attr-defined]
    assert spec.image == wisp.Image.debian_slim().env({"MODE": "prod"}).spec


@pytest.mark.parametrize(("key", "value"), [("name", "other"), ("single_use_containers", True), ("max_inputs", 1)])
def test_keywords_wisp_cannot_honour_yet_fail_clearly(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match="cannot be honoured"):
        wisp.App("kw").function(**{key: value})


def test_a_misspelling_still_gets_a_hint() -> None:
    with pytest.raises(TypeError, match="Did you mean `timeout=`"):
        wisp.App("kw").function(timeuot=3)

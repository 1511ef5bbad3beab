"""Specs travel as JSON (CLI -> server -> SQLite -> container): they must round-trip exactly."""
from __future__ import annotations

import json
from typing import Any

import pytest

from wisp import Image
from wisp._spec import AppSpec, FunctionSpec, SecretRef, WebSpec

IMAGE = Image.debian_slim("3.11").pip_install("boto3", "requests>=2").spec

FUNCTIONS = [
    FunctionSpec(name="plain", image=Image.debian_slim().spec),
    FunctionSpec(name="hook", image=IMAGE, web=WebSpec("webhook")),
    FunctionSpec(name="post", image=IMAGE, web=WebSpec("webhook", "POST", "my-label", True)),
    FunctionSpec(name="api", image=IMAGE, web=WebSpec("asgi", label="api"), keep_warm=2, container_idle_timeout=30),
    FunctionSpec(
        name="site", image=IMAGE, web=WebSpec("wsgi"), timeout=60, concurrency_limit=5, allow_concurrent_inputs=10,
        cpu=1.5, memory=512, gpu="A10G", retries={"max_retries": 3, "backoff_coefficient": 1.0, "initial_delay": 1.0, "max_delay": 60.0},
        secrets=(SecretRef("db"), SecretRef(env={"K": "v"}, keys=("K",)), SecretRef("api-key", required_keys=("X",))),
    ),
    FunctionSpec(name="fallbacks", image=IMAGE, gpu=("H100!:2", "A100")),  # a tuple again, not a list
    FunctionSpec(name="Model.predict", image=IMAGE, web=WebSpec("webhook", "POST"), cls="Model", method_name="predict"),
    FunctionSpec(name="Outer.Inner.api", image=IMAGE, web=WebSpec("asgi"), cls="Outer.Inner", method_name="api"),
]


def through_json(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("spec", FUNCTIONS, ids=[f.name for f in FUNCTIONS])
def test_function_spec_round_trip(spec: FunctionSpec) -> None:
    again = FunctionSpec.from_dict(through_json(spec.to_dict()))
    assert again == spec
    assert isinstance(again.secrets, tuple)
    assert again.web is None or isinstance(again.web, WebSpec)


@pytest.mark.parametrize(
    "functions",
    [(), (FUNCTIONS[0],), tuple(FUNCTIONS)],
    ids=["empty", "one", "all"],
)
def test_app_spec_round_trip(functions: tuple[FunctionSpec, ...]) -> None:
    spec = AppSpec(name="my-app", module="my_script", stub_attr="stub", functions=functions)
    again = AppSpec.from_dict(through_json(spec.to_dict()))
    assert again == spec
    assert isinstance(again.functions, tuple)
    assert [f.name for f in again.functions] == [f.name for f in functions]


def test_app_spec_to_dict_is_plain_json() -> None:
    spec = AppSpec(name="a", module="m", stub_attr="s", functions=(FUNCTIONS[2],))
    data = spec.to_dict()
    json.dumps(data)  # no dataclasses or other non-JSON values left
    assert data["functions"][0]["web"] == {"kind": "webhook", "method": "POST", "label": "my-label", "docs": True,
                                           "port": None, "startup_timeout": 5.0, "requires_proxy_auth": False}


def test_function_spec_from_dict_ignores_unknown_keys() -> None:
    data = {**FUNCTIONS[1].to_dict(), "added_in_a_later_version": 1}
    assert FunctionSpec.from_dict(data) == FUNCTIONS[1]


def test_function_spec_from_dict_fills_defaults() -> None:
    spec = FunctionSpec.from_dict({"name": "f", "image": IMAGE.to_data()})
    assert spec == FunctionSpec(name="f", image=IMAGE)
    assert (spec.web, spec.timeout, spec.keep_warm, spec.secrets) == (None, 300, 0, ())
    assert (spec.cls, spec.method_name) == (None, None)  # a plain function, as specs saved before classes


def test_app_spec_function_lookup() -> None:
    spec = AppSpec(name="a", module="m", stub_attr="s", functions=tuple(FUNCTIONS))
    assert spec.function("api") is FUNCTIONS[3]
    with pytest.raises(KeyError):
        spec.function("missing")

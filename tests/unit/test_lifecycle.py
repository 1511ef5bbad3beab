"""Container lifecycle hooks (S12): what `@stub.cls`, `@wisp.enter()`/`exit()` and the seed's
`__enter__` class form record, the errors misuse gets at import, and the agent's hook order."""
from __future__ import annotations

import asyncio
import json
import types
from typing import Any

import pytest

import wisp
from wisp import Image, Stub
from wisp._app import ENTER, EXIT, lifecycle_hooks
from wisp._runtime._lifecycle import enter_hooks, exit_hooks, find_class, run_exits
from wisp._runtime._load import LoadError
from wisp._spec import AppSpec, FunctionSpec, WebSpec
from wisp._urls import make_label


def app_spec(stub: Stub) -> AppSpec:
    return stub.spec(default_name="default", module="script", stub_attr="stub")


def spec_of(stub: Stub, name: str) -> FunctionSpec:
    return app_spec(stub).function(name)


# The seed's form needs classes at module level: the container finds them by their path.
SEED_STUB = Stub("seed")


class Seed:
    def __enter__(self) -> None:
        self.weights = 3

    def __exit__(self, *exc: object) -> None:
        self.closed = exc

    @SEED_STUB.webhook
    def predict(self, x: int) -> dict[str, int]:
        return {"y": self.weights * x}

    @SEED_STUB.asgi(keep_warm=1)
    def api(self) -> object:
        return object()

    def helper(self) -> int:
        return 1


class Outer:
    class Inner:
        @SEED_STUB.webhook(method="POST")
        def nested(self) -> None: ...


# -- @stub.cls --------------------------------------------------------------------------------


def test_stub_cls_records_each_web_method_as_class_dot_method() -> None:
    stub = Stub("models")

    @stub.cls(keep_warm=True, timeout=60, image=Image.debian_slim().pip_install("numpy"))
    class Model:
        @wisp.enter()
        def load(self) -> None:
            self.weights = 2

        @wisp.exit()
        def close(self) -> None: ...

        @wisp.fastapi_endpoint(method="POST", docs=True)
        def predict(self, x: int) -> dict[str, int]:
            return {"y": self.weights * x}

        @wisp.web_endpoint(label="models-health")
        def health(self) -> str:
            return "ok"

        @wisp.asgi_app()
        def api(self) -> object:
            return object()

        @wisp.wsgi_app()
        def site(self) -> object:
            return object()

        def not_served(self) -> None: ...

    specs = {f.name: f for f in app_spec(stub).functions}
    assert list(specs) == ["Model.predict", "Model.health", "Model.api", "Model.site"]
    assert specs["Model.predict"].web == WebSpec("webhook", "POST", None, True)
    assert specs["Model.health"].web == WebSpec("webhook", "GET", "models-health")
    assert specs["Model.api"].web == WebSpec("asgi")
    assert specs["Model.site"].web == WebSpec("wsgi")
    for name, spec in specs.items():
        assert (spec.cls, spec.method_name) == ("Model", name.split(".")[1])
        assert (spec.keep_warm, spec.timeout) == (2, 60)
        assert spec.image == Image.debian_slim().pip_install("numpy").spec
    assert stub._classes == {"Model": Model}
    assert Model.predict.__name__ == "predict"  # the class and its methods stay as they were
    assert make_label("models", "Model.predict") == "models--model-predict"


def test_stub_cls_returns_the_class_unchanged_bare_or_called() -> None:
    stub = Stub()

    class A:
        @wisp.fastapi_endpoint()
        def web(self) -> str:
            return "a"

    class B:
        @wisp.fastapi_endpoint()
        def web(self) -> str:
            return "b"

    assert stub.cls(A) is A
    assert stub.cls()(B) is B
    assert A().web() == "a"
    assert [f.name for f in app_spec(stub).functions] == ["A.web", "B.web"]


def test_class_without_web_methods_is_allowed_and_gets_no_url() -> None:
    stub = Stub()

    @stub.cls()
    class Worker:
        @wisp.enter()
        def load(self) -> None: ...

        def run(self) -> None: ...

    assert app_spec(stub).functions == ()
    assert stub._classes == {"Worker": Worker}


def test_concurrent_under_stub_cls_applies_to_every_method() -> None:
    stub = Stub()

    @stub.cls(max_containers=3)
    @wisp.concurrent(max_inputs=8, target_inputs=4)
    class Model:
        @wisp.fastapi_endpoint()
        def a(self) -> None: ...

        @wisp.asgi_app()
        def b(self) -> None: ...

    for name in ("Model.a", "Model.b"):
        spec = spec_of(stub, name)
        assert (spec.allow_concurrent_inputs, spec.target_inputs, spec.concurrency_limit) == (8, 4, 3)


def test_web_methods_are_inherited_base_first() -> None:
    class Base:
        @wisp.fastapi_endpoint()
        def health(self) -> str:
            return "ok"

        @wisp.enter()
        def base_load(self) -> None: ...

    stub = Stub()

    @stub.cls()
    class Model(Base):
        @wisp.enter()
        def load(self) -> None: ...

        @wisp.fastapi_endpoint()
        def predict(self) -> None: ...

    assert [f.name for f in app_spec(stub).functions] == ["Model.health", "Model.predict"]
    assert lifecycle_hooks(Model, ENTER) == ["base_load", "load"]


def test_nested_class_path_and_local_class_name() -> None:
    stub = Stub()

    class Local:  # defined in a function: the stub keeps the class object for the container
        @wisp.fastapi_endpoint()
        def web(self) -> None: ...

    stub.cls()(Local)
    assert spec_of(stub, "Local.web").cls == "Local"
    assert find_class(types.ModuleType("script"), stub, "Local") is Local


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"keep_wram": 1}, TypeError, r"Did you mean `keep_warm=`\?"),
        ({"timeout": 0}, ValueError, r"`timeout` must be a whole number"),
        ({"image": "debian"}, TypeError, r"`image` must be a wisp\.Image"),
    ],
)
def test_stub_cls_validates_keywords_at_once(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Stub().cls(**kwargs)


# -- misuse --------------------------------------------------------------------------------


def test_stub_cls_on_a_function_says_to_use_stub_function() -> None:
    def handler() -> None: ...

    with pytest.raises(TypeError, match=r"@stub\.cls must decorate a class, got <function .*`@stub\.function"):
        Stub().cls()(handler)
    with pytest.raises(TypeError, match=r"@stub\.cls must decorate a class"):
        Stub().cls(handler)


@pytest.mark.parametrize("value", [42, "Model"])
def test_stub_cls_positional_value_suggests_keywords(value: Any) -> None:
    with pytest.raises(TypeError, match=r"Positional arguments are not allowed.*`@stub\.cls\(timeout=60\)`"):
        Stub().cls(value)


@pytest.mark.parametrize(("decorator", "where"), [(wisp.enter, "@wisp.enter"), (wisp.exit, "@wisp.exit")])
def test_lifecycle_markers_without_parentheses_suggest_them(decorator: Any, where: str) -> None:
    def load(self: object) -> None: ...

    with pytest.raises(TypeError, match="Did you forget parentheses") as info:
        decorator(load)
    assert f"Suggestion: `{where}()`." in str(info.value)


def test_lifecycle_markers_return_the_method_unchanged() -> None:
    def load(self: object) -> None: ...

    async def close(self: object) -> None: ...

    assert wisp.enter()(load) is load
    assert wisp.enter(snap=True)(load) is load  # Modal's keyword, accepted
    assert wisp.exit()(close) is close


@pytest.mark.parametrize(("decorator", "where"), [(wisp.enter, "@wisp.enter"), (wisp.exit, "@wisp.exit")])
def test_hook_with_required_arguments_besides_self_is_an_error(decorator: Any, where: str) -> None:
    def load(self: object, path: str, *, device: str) -> None: ...

    with pytest.raises(TypeError) as info:
        decorator()(load)
    message = str(info.value)
    assert message.startswith(f"{where}: the container calls `load` with no arguments besides `self`")
    assert "requires path, device" in message


def test_hook_with_optional_arguments_is_fine() -> None:
    def load(self: object, path: str = "/models", *args: Any, **kwargs: Any) -> None: ...

    assert wisp.enter()(load) is load


def test_hook_without_self_is_an_error() -> None:
    def load() -> None: ...

    with pytest.raises(TypeError, match=r"`load` takes no `self`\. Write `def load\(self\): \.\.\.`"):
        wisp.enter()(load)


def test_hook_on_a_non_callable_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"@wisp\.exit must decorate a method, got 3"):
        wisp.exit()(3)


@pytest.mark.parametrize("order", ["hook above web", "web above hook"])
def test_a_method_cannot_be_both_hook_and_endpoint(order: str) -> None:
    def web(self: object) -> None: ...

    with pytest.raises(TypeError, match=r"`web` is marked both as a web endpoint and as an enter/exit hook"):
        if order == "hook above web":
            wisp.enter()(wisp.fastapi_endpoint()(web))
        else:
            wisp.fastapi_endpoint()(wisp.enter()(web))


def test_stub_webhook_inside_stub_cls_says_to_use_markers() -> None:
    stub = Stub()
    with pytest.raises(TypeError, match=r"`Model\.predict` has its own `@stub\.function`/`@stub\.webhook`.*"
                                        r"@wisp\.fastapi_endpoint\(\)"):
        @stub.cls()
        class Model:
            def predict(self) -> None: ...

            predict.__qualname__ = "Model.predict"  # as at module level, where the seed's form is allowed
            stub.webhook(predict)


@pytest.mark.parametrize("kind", [staticmethod, classmethod])
def test_static_and_class_methods_cannot_be_served(kind: Any) -> None:
    def web(*args: Any) -> None: ...

    with pytest.raises(TypeError, match=r"`Model\.web` must be a plain method"):
        Stub().cls()(type("Model", (), {"web": kind(wisp.fastapi_endpoint()(web))}))


def test_class_needing_constructor_arguments_is_an_error() -> None:
    class Model:
        def __init__(self, path: str) -> None: ...

    with pytest.raises(TypeError, match=r"creates `Model\(\)` with no arguments, but its `__init__` requires path"):
        Stub().cls()(Model)


def test_dunder_enter_with_required_arguments_is_an_error() -> None:
    class Model:
        def __enter__(self, path: str) -> None: ...  # noqa: PLE0302 (the wrong signature under test)

    with pytest.raises(TypeError, match=r"`Model\.__enter__`: the container calls `__enter__` .* requires path"):
        Stub().cls()(Model)


def test_concurrent_above_stub_cls_is_an_error() -> None:
    stub = Stub()

    class Model:
        @wisp.fastapi_endpoint()
        def web(self) -> None: ...

    stub.cls()(Model)
    with pytest.raises(TypeError, match=r"@wisp\.concurrent is above `@stub\.cls` here; put it under"):
        wisp.concurrent(max_inputs=2)(Model)


def test_two_classes_with_one_name_raise_value_error() -> None:
    stub = Stub()

    def make() -> type:
        class Model:
            @wisp.fastapi_endpoint()
            def web(self) -> None: ...

        return Model

    stub.cls()(make())
    with pytest.raises(ValueError, match=r"already has a class named `Model`\. Rename one of them\."):
        stub.cls()(make())


def test_class_method_clashing_with_a_seed_method_raises_value_error() -> None:
    stub = Stub()

    def predict(self: object) -> None: ...

    predict.__qualname__ = "Model.predict"
    stub.webhook(predict)

    class Model:
        @wisp.fastapi_endpoint()
        def predict(self) -> None: ...

    with pytest.raises(ValueError, match=r"already has a function named `Model\.predict`"):
        stub.cls()(Model)
    assert stub._classes == {}


# -- the seed's form: @stub.webhook on methods of a class with __enter__ -------------------------


def test_seed_form_records_class_and_method() -> None:
    specs = {f.name: f for f in app_spec(SEED_STUB).functions}
    assert list(specs) == ["Seed.predict", "Seed.api", "Outer.Inner.nested"]
    assert (specs["Seed.predict"].cls, specs["Seed.predict"].method_name) == ("Seed", "predict")
    assert specs["Seed.predict"].web == WebSpec("webhook")
    assert (specs["Seed.api"].web, specs["Seed.api"].keep_warm) == (WebSpec("asgi"), 1)
    assert (specs["Outer.Inner.nested"].cls, specs["Outer.Inner.nested"].method_name) == ("Outer.Inner", "nested")
    assert SEED_STUB.registered_functions["Seed.predict"] is vars(Seed)["predict"]


def test_seed_form_asgi_factory_may_take_self_only() -> None:
    def api(self: object, prefix: str) -> None: ...

    api.__qualname__ = "Site.api"
    with pytest.raises(TypeError, match=r"`api` requires prefix\."):
        Stub().asgi(api)


def test_functions_nested_in_functions_are_not_methods() -> None:
    stub = Stub()

    @stub.webhook
    def inner() -> None: ...

    assert inner.__qualname__.endswith("<locals>.inner")
    spec = spec_of(stub, "inner")
    assert (spec.cls, spec.method_name) == (None, None)


def test_seed_form_method_of_a_class_inside_a_function_is_an_error() -> None:
    stub = Stub()
    with pytest.raises(TypeError, match=r"`Model\.predict`, a method of a class defined inside a function.*"
                                        r"Define the class at module level"):
        class Model:
            @stub.webhook
            def predict(self) -> None: ...


# -- specs round-trip -------------------------------------------------------------------------


def test_class_specs_round_trip_through_json() -> None:
    spec = app_spec(SEED_STUB)
    again = AppSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.function("Outer.Inner.nested").cls == "Outer.Inner"


def test_specs_saved_before_classes_existed_load_as_functions() -> None:
    old = {"name": "f", "image": Image.debian_slim().spec.to_data(), "web": {"kind": "webhook"}}
    spec = FunctionSpec.from_dict(old)
    assert (spec.cls, spec.method_name) == (None, None)


# -- the agent's side: finding the class, hook order, exits ------------------------------------


def test_find_class_by_dotted_path_in_the_module() -> None:
    module = types.ModuleType("script")
    module.Outer = Outer  # type: ignore[attr-defined]
    assert find_class(module, Stub(), "Outer.Inner") is Outer.Inner
    with pytest.raises(LoadError, match=r"Class `Outer\.Missing` was not found"):
        find_class(module, Stub(), "Outer.Missing")


class Hooked:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __enter__(self) -> None:
        self.calls.append("__enter__")

    def __exit__(self, *exc: object) -> None:
        self.calls.append(f"__exit__{exc}")

    @wisp.enter()
    def second(self) -> None:
        self.calls.append("second")

    @wisp.exit()
    def close(self) -> None:
        self.calls.append("close")

    @wisp.enter()
    async def third(self) -> None:
        await asyncio.sleep(0)
        self.calls.append("third")


def test_enter_hooks_run_dunder_first_then_marked_in_definition_order() -> None:
    hooked = Hooked()
    assert [name for name, _ in enter_hooks(hooked)] == ["__enter__", "second", "third"]
    assert [name for name, _ in exit_hooks(hooked)] == ["close", "__exit__"]
    assert lifecycle_hooks(Hooked, EXIT) == ["close"]


def test_exit_hooks_all_run_even_when_one_raises(capsys: pytest.CaptureFixture[str]) -> None:
    class Closing(Hooked):
        @wisp.exit()
        def broken(self) -> None:
            raise ValueError("cleanup failed")

        @wisp.exit()
        async def async_close(self) -> None:
            self.calls.append("async_close")

    closing = Closing()
    loop = asyncio.new_event_loop()
    try:
        run_exits(loop, closing)
    finally:
        loop.close()
    assert closing.calls == ["close", "async_close", "__exit__(None, None, None)"]
    err = capsys.readouterr().err
    assert "Closing.broken raised while the container was stopping:" in err
    assert err.rstrip().endswith("ValueError: cleanup failed")

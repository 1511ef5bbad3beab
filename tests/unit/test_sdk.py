"""The decorators record specs and return the function unchanged (STYLE rule 2).

Every check here runs at import time of a user's script, so errors must say what to write.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import wisp
from wisp import Image, Stub
from wisp._spec import HTTP_METHODS, FunctionSpec, SecretRef, WebSpec


def spec_of(stub: Stub, name: str) -> FunctionSpec:
    return stub.spec(default_name="default", module="script", stub_attr="stub").function(name)


def make_function(name: str) -> Callable[[], str]:
    """A fresh function object named `name`: decorators mark what they decorate, so never reuse one."""

    def fn() -> str:
        return name

    fn.__name__ = fn.__qualname__ = name
    return fn


# -- @stub.webhook ---------------------------------------------------------------------------


def test_bare_webhook_returns_the_same_function() -> None:
    stub = Stub()

    def square(x: int) -> dict[str, int]:
        return {"square": x**2}

    assert stub.webhook(square) is square
    assert square(7) == {"square": 49}
    assert stub.registered_functions == {"square": square}
    assert spec_of(stub, "square").web == WebSpec("webhook", "GET", None, False)


def test_webhook_with_parentheses_returns_the_same_function() -> None:
    stub = Stub()

    def square(x: int) -> dict[str, int]:
        return {"square": x**2}

    assert stub.webhook()(square) is square
    assert square(3) == {"square": 9}
    assert spec_of(stub, "square").web == WebSpec("webhook", "GET", None, False)


def test_decorator_syntax_keeps_the_function_callable() -> None:
    stub = Stub()

    @stub.webhook
    def bare() -> str:
        return "bare"

    @stub.webhook(method="POST", label="hello", docs=True)
    def called() -> str:
        return "called"

    assert (bare(), called()) == ("bare", "called")
    assert spec_of(stub, "called").web == WebSpec("webhook", "POST", "hello", True)


@pytest.mark.parametrize(
    ("method", "expected"),
    [("GET", "GET"), ("post", "POST"), ("Post", "POST"), ("put", "PUT"), ("patch", "PATCH"),
     ("delete", "DELETE"), ("head", "HEAD"), ("options", "OPTIONS")],
)
def test_webhook_method_is_normalized(method: str, expected: str) -> None:
    stub = Stub()
    stub.webhook(method=method)(make_function("handler"))
    assert spec_of(stub, "handler").web.method == expected  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["FETCH", "get ", "", "CONNECT", None, 1])
def test_webhook_rejects_unknown_methods_and_lists_the_allowed_ones(method: Any) -> None:
    with pytest.raises(ValueError) as info:
        Stub().webhook(method=method)
    message = str(info.value)
    assert f"method={method!r}" in message
    for allowed in HTTP_METHODS:
        assert allowed in message


@pytest.mark.parametrize("positional", ["POST", "GET", 42])
def test_webhook_positional_argument_suggests_method_keyword(positional: Any) -> None:
    with pytest.raises(TypeError, match=r"Positional arguments are not allowed") as info:
        Stub().webhook(positional)
    assert f"@stub.webhook(method={positional!r})" in str(info.value)


# -- keywords shared by every decorator --------------------------------------------------------


def _decorate(stub: Stub, form: str, **kwargs: Any) -> None:
    if form == "webhook":
        stub.webhook(**kwargs)(make_function("handler"))
    elif form == "asgi":
        stub.asgi(**kwargs)(make_function("app_factory"))
    elif form == "wsgi":
        stub.wsgi(**kwargs)(make_function("app_factory"))
    elif form == "function":
        stub.function(**kwargs)(wisp.fastapi_endpoint()(make_function("handler")))
    elif form == "cls":
        stub.cls(**kwargs)(type("Model", (), {"handler": wisp.fastapi_endpoint()(make_function("handler"))}))
    else:  # pragma: no cover
        raise AssertionError(form)


def _registered_name(form: str) -> str:
    return {"asgi": "app_factory", "wsgi": "app_factory", "cls": "Model.handler"}.get(form, "handler")


FORMS = ["webhook", "asgi", "wsgi", "function", "cls"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("keep_wram", "keep_warm"), ("timout", "timeout"), ("container_idle_timout", "container_idle_timeout"),
     ("min_container", "min_containers"), ("secret_", "secret")],
)
def test_unknown_keyword_suggests_the_closest_one(form: str, typo: str, suggestion: str) -> None:
    with pytest.raises(TypeError) as info:
        _decorate(Stub(), form, **{typo: True})
    message = str(info.value)
    assert f"`{typo}`" in message
    assert f"Did you mean `{suggestion}=`?" in message


@pytest.mark.parametrize("form", FORMS)
def test_unknown_keyword_without_close_match_lists_known_keywords(form: str) -> None:
    with pytest.raises(TypeError, match=r"unknown keyword argument `banana`\. Known keywords: .*keep_warm"):
        _decorate(Stub(), form, banana=1)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("kwargs", "field", "expected"),
    [
        ({}, "keep_warm", 0),
        ({"keep_warm": True}, "keep_warm", 2),
        ({"keep_warm": False}, "keep_warm", 0),
        ({"keep_warm": None}, "keep_warm", 0),
        ({"keep_warm": 3}, "keep_warm", 3),
        ({"keep_warm": 0}, "keep_warm", 0),
        ({"min_containers": 3}, "keep_warm", 3),
        ({"min_containers": True}, "keep_warm", 2),
        ({}, "container_idle_timeout", 60),
        ({"container_idle_timeout": 120}, "container_idle_timeout", 120),
        ({"scaledown_window": 30}, "container_idle_timeout", 30),
        ({"container_idle_timeout": 2}, "container_idle_timeout", 2),
        ({}, "concurrency_limit", None),
        ({"concurrency_limit": 4}, "concurrency_limit", 4),
        ({"max_containers": 5}, "concurrency_limit", 5),
        ({"max_containers": None}, "concurrency_limit", None),
        ({}, "timeout", 300),
        ({"timeout": 60}, "timeout", 60),
        ({}, "allow_concurrent_inputs", 1),
        ({"allow_concurrent_inputs": 10}, "allow_concurrent_inputs", 10),
        ({"allow_concurrent_inputs": None}, "allow_concurrent_inputs", 1),
        ({"secret": "db"}, "secrets", (SecretRef("db"),)),
        ({"secrets": ["a", "b"]}, "secrets", (SecretRef("a"), SecretRef("b"))),
        ({"cpu": 2.0, "memory": 512}, "memory", 512),
        ({"gpu": "A10G"}, "gpu", "A10G"),
        ({"gpu": "a100-80gb:2"}, "gpu", "A100-80GB:2"),
        ({"gpu": ["h100!", "A100"]}, "gpu", ("H100!", "A100")),
        ({"retries": 3}, "retries", {"max_retries": 3, "backoff_coefficient": 1.0, "initial_delay": 1.0, "max_delay": 60.0}),
        ({"retries": wisp.Retries(max_retries=2, initial_delay=0.5)}, "retries",
         {"max_retries": 2, "backoff_coefficient": 2.0, "initial_delay": 0.5, "max_delay": 60.0}),
    ],
)
def test_keywords_and_aliases_land_on_spec_fields(form: str, kwargs: dict[str, Any], field: str, expected: Any) -> None:
    stub = Stub()
    _decorate(stub, form, **kwargs)
    name = _registered_name(form)
    assert getattr(spec_of(stub, name), field) == expected


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"container_idle_timeout": 1}, "container_idle_timeout"),
        ({"container_idle_timeout": 3601}, "container_idle_timeout"),
        ({"scaledown_window": 0}, "scaledown_window"),
        ({"keep_warm": -1}, "keep_warm"),
        ({"keep_warm": 1001}, "keep_warm"),
        ({"keep_warm": "2"}, "keep_warm"),
        ({"keep_warm": 1.5}, "keep_warm"),
        ({"min_containers": -1}, "keep_warm"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 24 * 3600 + 1}, "timeout"),
        ({"max_containers": 0}, "max_containers"),
        ({"concurrency_limit": True}, "concurrency_limit"),
        ({"allow_concurrent_inputs": 0}, "allow_concurrent_inputs"),
    ],
)
def test_out_of_range_values_raise_value_error_naming_the_keyword(form: str, kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"`{key}` must be a whole number from \d+ to \d+, got "):
        _decorate(Stub(), form, **kwargs)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("gpu", "error"), [("T4:0", "GPU count in 'T4:0'"), ("A 100", "is not a GPU model"),
                                            (2, "gpu= takes a model name")])
def test_a_bad_gpu_fails_at_the_decorator(form: str, gpu: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        _decorate(Stub(), form, gpu=gpu)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("image", ["debian_slim", {"pip": []}, Image])
def test_image_must_be_an_image(form: str, image: Any) -> None:
    with pytest.raises(TypeError, match=r"`image` must be a wisp\.Image.*Image\.debian_slim\(\)"):
        _decorate(Stub(), form, image=image)


@pytest.mark.parametrize(
    ("key", "field", "default"),
    [("image", "image", Image.debian_slim().spec), ("timeout", "timeout", 300),
     ("container_idle_timeout", "container_idle_timeout", 60)],
)
def test_none_means_the_default(key: str, field: str, default: Any) -> None:
    stub = Stub()
    stub.webhook(**{key: None})(make_function("handler"))
    assert getattr(spec_of(stub, "handler"), field) == default


@pytest.mark.parametrize("form", FORMS)
def test_image_keyword_is_recorded(form: str) -> None:
    stub = Stub(image=Image.debian_slim("3.12"))
    image = Image.debian_slim().pip_install("boto3")
    _decorate(stub, form, image=image)
    name = _registered_name(form)
    assert spec_of(stub, name).image == image.spec


def test_stub_image_is_the_default_image() -> None:
    image = Image.debian_slim("3.11").pip_install("flask")
    stub = Stub(image=image)
    stub.webhook(make_function("handler"))
    assert spec_of(stub, "handler").image == image.spec
    plain = Stub()
    plain.webhook(make_function("handler"))
    assert spec_of(plain, "handler").image == Image.debian_slim().spec


# -- non-callables, duplicates ---------------------------------------------------------------


@pytest.mark.parametrize(
    "decorator",
    [
        lambda stub: stub.webhook(),
        lambda stub: stub.webhook(method="POST"),
        lambda stub: stub.asgi(),
        lambda stub: stub.wsgi(label="x"),
        lambda stub: stub.function(),
        lambda stub: wisp.fastapi_endpoint(),
        lambda stub: wisp.asgi_app(),
        lambda stub: wisp.wsgi_app(),
    ],
    ids=["webhook()", "webhook(method)", "asgi()", "wsgi(label)", "function()", "fastapi_endpoint()",
         "asgi_app()", "wsgi_app()"],
)
@pytest.mark.parametrize("target", [42, "f", None])
def test_decorating_a_non_callable_raises_type_error(decorator: Callable[[Stub], Any], target: Any) -> None:
    with pytest.raises(TypeError, match=r"must decorate a function, got"):
        decorator(Stub())(target)


@pytest.mark.parametrize(
    ("call", "suggestion"),
    [
        (lambda stub: stub.asgi("x"), "@stub.asgi(image=image)"),
        (lambda stub: stub.wsgi(3), "@stub.wsgi(image=image)"),
        (lambda stub: stub.function("x"), "@stub.function(timeout=60)"),
    ],
)
def test_positional_non_callable_raises_type_error_with_suggestion(call: Callable[[Stub], Any], suggestion: str) -> None:
    with pytest.raises(TypeError, match="Positional arguments are not allowed") as info:
        call(Stub())
    assert suggestion in str(info.value)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (lambda s, f: s.webhook(f), lambda s, f: s.webhook(f)),
        (lambda s, f: s.webhook(method="POST")(f), lambda s, f: s.asgi(f)),
        (lambda s, f: s.wsgi(f), lambda s, f: s.function()(wisp.fastapi_endpoint()(f))),
        (lambda s, f: s.function(f), lambda s, f: s.webhook(f)),
    ],
    ids=["webhook+webhook", "webhook+asgi", "wsgi+function", "function+webhook"],
)
def test_two_functions_with_one_name_raise_value_error(
    first: Callable[[Stub, Any], Any], second: Callable[[Stub, Any], Any]
) -> None:
    stub = Stub()
    first(stub, make_function("square"))
    with pytest.raises(ValueError, match=r"already has a function named `square`\. Rename one of them\."):
        second(stub, make_function("square"))
    assert len(stub.registered_functions) == 1


def test_functions_with_different_names_are_all_recorded_in_order() -> None:
    stub = Stub()
    for name in ["b", "a", "c"]:
        stub.webhook(make_function(name))
    spec = stub.spec(default_name="app", module="script", stub_attr="stub")
    assert [f.name for f in spec.functions] == ["b", "a", "c"]


# -- @stub.asgi / @stub.wsgi ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_app_decorators_bare_return_the_same_function(kind: str) -> None:
    stub = Stub()

    def make_app() -> str:
        return "app"

    assert getattr(stub, kind)(make_app) is make_app
    assert make_app() == "app"
    assert spec_of(stub, "make_app").web == WebSpec(kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_app_decorators_with_keywords(kind: str) -> None:
    stub = Stub()
    image = Image.debian_slim().pip_install("flask")

    def make_app(prefix: str = "/") -> str:
        return prefix

    assert getattr(stub, kind)(label="my-site", image=image, keep_warm=True)(make_app) is make_app
    spec = spec_of(stub, "make_app")
    assert spec.web == WebSpec(kind, label="my-site")  # type: ignore[arg-type]
    assert (spec.keep_warm, spec.image) == (2, image.spec)


def _one_required(app_name: str) -> None: ...
def _keyword_only_required(*, debug: bool) -> None: ...
def _two_required(a: int, b: int, c: int = 3) -> None: ...


@pytest.mark.parametrize(
    "decorator",
    [
        lambda stub: stub.asgi,
        lambda stub: stub.wsgi,
        lambda stub: stub.asgi(label="x"),
        lambda stub: stub.wsgi(keep_warm=1),
        lambda stub: lambda fn: stub.function()(wisp.asgi_app()(fn)),
        lambda stub: lambda fn: stub.function()(wisp.wsgi_app()(fn)),
    ],
    ids=["asgi", "wsgi", "asgi(label)", "wsgi(keep_warm)", "asgi_app()", "wsgi_app()"],
)
@pytest.mark.parametrize(
    ("factory", "names"),
    [(_one_required, "app_name"), (_keyword_only_required, "debug"), (_two_required, "a, b")],
)
def test_app_factory_with_required_arguments_raises_type_error(
    decorator: Callable[[Stub], Any], factory: Callable[..., Any], names: str
) -> None:
    stub = Stub()
    with pytest.raises(TypeError, match="takes no arguments") as info:
        decorator(stub)(factory)
    assert f"`{factory.__name__}` requires {names}." in str(info.value)
    assert stub.registered_functions == {}


def _with_defaults(a: int = 1, *args: Any, b: int = 2, **kwargs: Any) -> None: ...


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_app_factory_with_only_optional_arguments_is_accepted(kind: str) -> None:
    stub = Stub()
    getattr(stub, kind)(_with_defaults)
    assert spec_of(stub, "_with_defaults").web.kind == kind  # type: ignore[union-attr]


# -- modern stacked forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("web_decorator", "expected"),
    [
        (wisp.fastapi_endpoint(), WebSpec("webhook", "GET")),
        (wisp.fastapi_endpoint(method="POST"), WebSpec("webhook", "POST")),
        (wisp.fastapi_endpoint(method="post", label="sq", docs=True), WebSpec("webhook", "POST", "sq", True)),
        (wisp.web_endpoint(method="DELETE"), WebSpec("webhook", "DELETE")),
        (wisp.asgi_app(), WebSpec("asgi")),
        (wisp.asgi_app(label="api"), WebSpec("asgi", label="api")),
        (wisp.wsgi_app(), WebSpec("wsgi")),
        (wisp.wsgi_app(label="flask"), WebSpec("wsgi", label="flask")),
    ],
)
@pytest.mark.parametrize("parentheses", [True, False], ids=["function()", "function"])
def test_stub_function_over_web_decorator_makes_a_web_spec(
    web_decorator: Callable[[Any], Any], expected: WebSpec, parentheses: bool
) -> None:
    stub = Stub()
    fn = make_function("endpoint")
    marked = web_decorator(fn)
    registered = stub.function(timeout=30)(marked) if parentheses else stub.function(marked)
    assert registered is marked is fn
    spec = spec_of(stub, "endpoint")
    assert spec.web == expected
    assert spec.timeout == (30 if parentheses else 300)


def test_modern_form_with_decorator_syntax() -> None:
    stub = Stub("modern")

    @stub.function(keep_warm=True)
    @wisp.fastapi_endpoint(method="POST")
    def square(x: int = 2) -> dict[str, int]:
        return {"square": x**2}

    @stub.function()
    @wisp.asgi_app()
    def api() -> object:
        return object()

    @stub.function()
    @wisp.wsgi_app()
    def site() -> object:
        return object()

    assert square() == {"square": 4}
    assert spec_of(stub, "square").web == WebSpec("webhook", "POST")
    assert spec_of(stub, "square").keep_warm == 2
    assert spec_of(stub, "api").web == WebSpec("asgi")
    assert spec_of(stub, "site").web == WebSpec("wsgi")


def test_stub_function_without_web_decorator_has_no_web_spec() -> None:
    stub = Stub()
    stub.function()(make_function("handler"))
    assert spec_of(stub, "handler").web is None


@pytest.mark.parametrize(
    ("decorator", "where"),
    [(wisp.fastapi_endpoint, "@wisp.fastapi_endpoint"), (wisp.web_endpoint, "@wisp.fastapi_endpoint"),
     (wisp.asgi_app, "@wisp.asgi_app"), (wisp.wsgi_app, "@wisp.wsgi_app")],
)
def test_web_decorator_without_parentheses_suggests_them(decorator: Callable[..., Any], where: str) -> None:
    with pytest.raises(TypeError, match="Did you forget parentheses") as info:
        decorator(make_function("app_factory"))
    assert f"Suggestion: `{where}()`." in str(info.value)


@pytest.mark.parametrize("method", ["FETCH", "get_"])
def test_fastapi_endpoint_rejects_unknown_methods(method: str) -> None:
    with pytest.raises(ValueError, match=r"@wisp\.fastapi_endpoint: method=.* Use one of: GET, POST"):
        wisp.fastapi_endpoint(method=method)


@pytest.mark.parametrize(
    ("web_decorator", "where"),
    [(wisp.fastapi_endpoint(), "@wisp.fastapi_endpoint"), (wisp.asgi_app(), "@wisp.asgi_app"),
     (wisp.wsgi_app(), "@wisp.wsgi_app")],
)
@pytest.mark.parametrize(
    "register",
    [lambda stub, fn: stub.function()(fn), lambda stub, fn: stub.function(fn), lambda stub, fn: stub.webhook(fn)],
    ids=["function()", "function", "webhook"],
)
def test_web_decorator_above_stub_function_raises_type_error(
    web_decorator: Callable[[Any], Any], where: str, register: Callable[[Stub, Any], Any]
) -> None:
    stub = Stub()
    fn = register(stub, make_function("late"))
    with pytest.raises(TypeError, match=rf"{where} is below `@stub\.function` here; put it closer") as info:
        web_decorator(fn)
    assert "@stub.function(...)" in str(info.value)


# -- Stub -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stub_name", "default_name", "expected"),
    [("my-app", "script", "my-app"), (None, "script", "script"), ("Other App", "x", "Other App")],
)
def test_stub_name_or_default_name(stub_name: str | None, default_name: str, expected: str) -> None:
    stub = Stub(name=stub_name)
    stub.webhook(make_function("handler"))
    spec = stub.spec(default_name=default_name, module="mod", stub_attr="app")
    assert (spec.name, spec.module, spec.stub_attr) == (expected, "mod", "app")
    assert [f.name for f in spec.functions] == ["handler"]


def test_stub_name_positional_and_app_alias() -> None:
    assert wisp.App("positional").spec(default_name="d", module="m", stub_attr="s").name == "positional"


@pytest.mark.parametrize("name", ["", "   ", 3])
def test_stub_rejects_bad_names(name: Any) -> None:
    with pytest.raises(ValueError, match="Stub name must be a non-empty string"):
        Stub(name)


@pytest.mark.parametrize("image", ["debian", Image])
def test_stub_rejects_non_image(image: Any) -> None:
    with pytest.raises(TypeError, match=r"Stub\(image=\.\.\.\) must be a wisp\.Image"):
        Stub(image=image)

"""Stub/App and the decorators. Decorators validate at once, record a spec, return the function.

Nothing here runs user code or starts anything: `serve`/`deploy` turn the recorded specs into
work (STYLE rule 2).
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ._image import Image
from ._spec import HTTP_METHODS, AppSpec, FunctionSpec, WebSpec

F = TypeVar("F", bound=Callable[..., Any])

# Modal's keyword names, with their wisp spec field (aliases map onto one field).
_FUNCTION_KEYWORDS = {
    "image": "image",
    "secret": "secrets",
    "secrets": "secrets",
    "cpu": "cpu",
    "memory": "memory",
    "gpu": "gpu",
    "timeout": "timeout",
    "retries": "retries",
    "concurrency_limit": "concurrency_limit",
    "max_containers": "concurrency_limit",
    "container_idle_timeout": "container_idle_timeout",
    "scaledown_window": "container_idle_timeout",
    "keep_warm": "keep_warm",
    "min_containers": "keep_warm",
    "allow_concurrent_inputs": "allow_concurrent_inputs",
    "buffer_containers": "buffer_containers",
    "startup_timeout": "startup_timeout",
}
KEEP_WARM_TRUE = 2  # Modal's fixed warm pool size for keep_warm=True


def _unknown_keyword(where: str, key: str, known: list[str]) -> TypeError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean `{close[0]}=`?" if close else f" Known keywords: {', '.join(known)}."
    return TypeError(f"{where} got an unknown keyword argument `{key}`.{hint}")


def _int_in(where: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where}: `{key}` must be a whole number from {low} to {high}, got {value!r}.")
    return value


def _keep_warm(where: str, value: Any) -> int:
    if value is True:
        return KEEP_WARM_TRUE
    if value is False or value is None:
        return 0
    return _int_in(where, "keep_warm", value, 0, 1000)


def _secrets(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(str(getattr(s, "name", s)) for s in items if s is not None)


def _function_fields(where: str, kwargs: dict[str, Any], default_image: Image) -> dict[str, Any]:
    """Validate `stub.function` keywords and turn them into FunctionSpec fields."""
    fields: dict[str, Any] = {"image": default_image.spec}
    for key, value in kwargs.items():
        target = _FUNCTION_KEYWORDS.get(key)
        if target is None:
            raise _unknown_keyword(where, key, sorted(_FUNCTION_KEYWORDS))
        if value is None and target in ("image", "timeout", "container_idle_timeout", "startup_timeout", "buffer_containers"):
            continue  # None means the default, as in Modal
        if target == "image":
            if not isinstance(value, Image):
                raise TypeError(
                    f"{where}: `image` must be a wisp.Image, got {value!r}. "
                    'Write for example `image=wisp.Image.debian_slim().pip_install("boto3")`.'
                )
            fields["image"] = value.spec
        elif target == "timeout":
            fields[target] = _int_in(where, key, value, 1, 24 * 3600)
        elif target == "container_idle_timeout":
            fields[target] = _int_in(where, key, value, 2, 3600)
        elif target == "startup_timeout":
            fields[target] = _int_in(where, key, value, 1, 3600)
        elif target == "buffer_containers":
            fields[target] = _int_in(where, key, value, 0, 1000)
        elif target == "keep_warm":
            fields[target] = _keep_warm(where, value)
        elif target in ("concurrency_limit", "allow_concurrent_inputs"):
            fields[target] = None if value is None else _int_in(where, key, value, 1, 10_000)
        elif target == "secrets":
            fields[target] = _secrets(value)
        else:
            fields[target] = value
    if fields.get("allow_concurrent_inputs") is None:
        fields.pop("allow_concurrent_inputs", None)
    return fields


def _check_callable(where: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"{where} must decorate a function, got {obj!r}.")


def _check_factory(where: str, fn: Callable[..., Any]) -> None:
    """ASGI/WSGI factories are called with no arguments inside the container."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise TypeError(
            f"{where} decorates a function that returns the app and takes no arguments; "
            f"`{fn.__name__}` requires {', '.join(required)}. Give them defaults or build the app inside."
        )


def _check_method(where: str, method: Any) -> str:
    upper = str(method).upper()
    if upper not in HTTP_METHODS:
        raise ValueError(
            f"{where}: method={method!r} is not an HTTP method wisp serves. "
            f"Use one of: {', '.join(HTTP_METHODS)}."
        )
    return upper


def _positional(where: str, value: Any, suggestion: str) -> TypeError:
    return TypeError(
        f"Positional arguments are not allowed in {where}: got {value!r}. "
        f"Did you forget a keyword? Suggestion: `{suggestion}`."
    )


def _bare_or_factory(where: str, first: Any, wrap: Callable[[F], F], suggestion: str) -> Any:
    """Support both `@stub.webhook` and `@stub.webhook(...)`; reject `@stub.webhook("POST")`."""
    if first is None:
        return wrap
    if callable(first):
        return wrap(first)
    raise _positional(where, first, suggestion)


def _mark_web(where: str, fn: Any, web: WebSpec) -> Any:
    _check_callable(where, fn)
    if getattr(fn, "__wisp_function__", None) is not None:
        raise TypeError(
            f"{where} is below `@stub.function` here; put it closer to the function:\n"
            f"    @stub.function(...)\n    {where}\n    def {getattr(fn, '__name__', 'f')}(...): ..."
        )
    if web.kind != "webhook":
        _check_factory(where, fn)
    fn.__wisp_web__ = web
    return fn


def _web_decorator(where: str, first: Any, web: WebSpec) -> Callable[[F], F]:
    """The modern stackable forms, which always take parentheses, as in Modal."""
    if first is not None:
        raise TypeError(
            f"Positional arguments are not allowed in {where}. Did you forget parentheses? "
            f"Suggestion: `{where}()`."
        )
    return lambda fn: _mark_web(where, fn, web)


def fastapi_endpoint(
    _warn_parentheses_missing: Any = None, *, method: str = "GET", label: str | None = None, docs: bool = False
) -> Callable[[F], F]:
    """Mark a function as a FastAPI endpoint; stack under `@stub.function(...)`."""
    where = "@wisp.fastapi_endpoint"
    web = WebSpec("webhook", _check_method(where, method), label, docs)
    return _web_decorator(where, _warn_parentheses_missing, web)


web_endpoint = fastapi_endpoint


def asgi_app(_warn_parentheses_missing: Any = None, *, label: str | None = None) -> Callable[[F], F]:
    """Mark a function that returns an ASGI app; stack under `@stub.function(...)`."""
    return _web_decorator("@wisp.asgi_app", _warn_parentheses_missing, WebSpec("asgi", label=label))


def wsgi_app(_warn_parentheses_missing: Any = None, *, label: str | None = None) -> Callable[[F], F]:
    """Mark a function that returns a WSGI app; stack under `@stub.function(...)`."""
    return _web_decorator("@wisp.wsgi_app", _warn_parentheses_missing, WebSpec("wsgi", label=label))


def concurrent(
    _warn_parentheses_missing: Any = None, *, max_inputs: int, target_inputs: int | None = None
) -> Callable[[F], F]:
    """Let one container take up to `max_inputs` requests at once; the autoscaler aims for
    `target_inputs` (default: max_inputs). Stack under `@stub.function(...)` or `@stub.cls(...)`."""
    where = "@wisp.concurrent"
    if _warn_parentheses_missing is not None:
        raise TypeError(f"Positional arguments are not allowed in {where}. Did you forget parentheses? "
                        f"Suggestion: `{where}(max_inputs=10)`.")
    max_inputs = _int_in(where, "max_inputs", max_inputs, 1, 10_000)
    if target_inputs is not None:
        target_inputs = _int_in(where, "target_inputs", target_inputs, 1, max_inputs)

    def mark(fn: F) -> F:
        _check_callable(where, fn)
        if getattr(fn, "__wisp_function__", None) is not None:
            raise TypeError(f"{where} is below `@stub.function` here; put it closer to the function.")
        fn.__wisp_concurrent__ = (max_inputs, target_inputs)  # type: ignore[attr-defined]
        return fn

    return mark


class Stub:
    """A group of functions served or deployed together: `stub = wisp.Stub("my-app")`."""

    def __init__(self, name: str | None = None, *, image: Image | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f"Stub name must be a non-empty string, got {name!r}.")
        if image is not None and not isinstance(image, Image):
            raise TypeError(f"Stub(image=...) must be a wisp.Image, got {image!r}.")
        self.name = name
        self.image = image or Image.debian_slim()
        self._functions: dict[str, tuple[Callable[..., Any], FunctionSpec]] = {}

    def _register(self, where: str, fn: Callable[..., Any], web: WebSpec | None, fields: dict[str, Any]) -> None:
        _check_callable(where, fn)
        name = fn.__name__
        if name in self._functions and self._functions[name][0] is not fn:
            raise ValueError(
                f"{where}: this stub already has a function named `{name}`. Rename one of them."
            )
        concurrency = getattr(fn, "__wisp_concurrent__", None)
        if concurrency is not None:
            fields = {**fields, "allow_concurrent_inputs": concurrency[0], "target_inputs": concurrency[1]}
        spec = FunctionSpec(name=name, web=web, **fields)
        self._functions[name] = (fn, spec)
        fn.__wisp_function__ = spec  # type: ignore[attr-defined]

    def function(self, _fn: Any = None, /, **kwargs: Any) -> Any:
        """Register a function; stack `@wisp.fastapi_endpoint()` etc. under it to serve it."""
        where = "@stub.function"
        fields = _function_fields(where, kwargs, self.image)

        def wrap(fn: F) -> F:
            self._register(where, fn, getattr(fn, "__wisp_web__", None), fields)
            return fn

        return _bare_or_factory(where, _fn, wrap, "@stub.function(timeout=60)")

    def webhook(
        self, _fn: Any = None, /, *, method: str = "GET", label: str | None = None, docs: bool = False, **kwargs: Any
    ) -> Any:
        """Serve a function as a FastAPI endpoint at the root of its own URL."""
        where = "@stub.webhook"
        if _fn is not None and not callable(_fn):
            raise _positional(where, _fn, f"@stub.webhook(method={_fn!r})")
        web = WebSpec("webhook", _check_method(where, method), label, docs)
        fields = _function_fields(where, kwargs, self.image)

        def wrap(fn: F) -> F:
            self._register(where, fn, web, fields)
            return fn

        return _bare_or_factory(where, _fn, wrap, "@stub.webhook(method=\"POST\")")

    def _app_decorator(self, where: str, kind: str, first: Any, label: str | None, kwargs: dict[str, Any]) -> Any:
        fields = _function_fields(where, kwargs, self.image)

        def wrap(fn: F) -> F:
            _check_callable(where, fn)
            _check_factory(where, fn)
            self._register(where, fn, WebSpec(kind, label=label), fields)  # type: ignore[arg-type]
            return fn

        return _bare_or_factory(where, first, wrap, f"{where}(image=image)")

    def asgi(self, _fn: Any = None, /, *, label: str | None = None, **kwargs: Any) -> Any:
        """Serve the ASGI app (FastAPI, Starlette, ...) that the decorated function returns."""
        return self._app_decorator("@stub.asgi", "asgi", _fn, label, kwargs)

    def wsgi(self, _fn: Any = None, /, *, label: str | None = None, **kwargs: Any) -> Any:
        """Serve the WSGI app (Flask, Django, ...) that the decorated function returns."""
        return self._app_decorator("@stub.wsgi", "wsgi", _fn, label, kwargs)

    @property
    def registered_functions(self) -> dict[str, Callable[..., Any]]:
        return {name: fn for name, (fn, _) in self._functions.items()}

    def spec(self, *, default_name: str, module: str, stub_attr: str) -> AppSpec:
        return AppSpec(
            name=self.name or default_name,
            module=module,
            stub_attr=stub_attr,
            functions=tuple(spec for _, spec in self._functions.values()),
        )

    def serve(self, *, port: int | None = None) -> None:
        """Serve this stub's script as `wisp serve` would, until Ctrl-C."""
        from .cli.serve import serve_stub

        serve_stub(self, port=port)


App = Stub

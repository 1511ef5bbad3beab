"""Stub/App and the decorators. Decorators validate at once, record a spec, return the function.

Nothing here runs user code or starts anything: `serve`/`deploy` turn the recorded specs into
work (STYLE rule 2).
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from ._functions import FunctionHandle
from ._gpu import canonical as canonical_gpu
from ._image import Image
from ._modal_keywords import NO_OPS, REFUSED, refusal
from ._network import canonical as canonical_network
from ._retries import policy
from ._secret import Secret
from ._spec import HTTP_METHODS, AppSpec, FunctionSpec, SecretRef, WebKind, WebSpec

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

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
    "_experimental_buffer_containers": "buffer_containers",
    "startup_timeout": "startup_timeout",
    "fork": "fork",
    "ephemeral_disk": "ephemeral_disk",
    "network": "network",
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


def _secrets(where: str, value: Any) -> tuple[SecretRef, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    refs = []
    for item in items:
        if isinstance(item, str):  # a name, as `Secret.from_name(item)`
            item = Secret.from_name(item)
        if isinstance(item, Secret):
            refs.append(item.ref)
        elif item is not None:
            raise TypeError(f"{where}: `secrets` takes wisp.Secret values, got {item!r}. "
                            'Write for example `secrets=[wisp.Secret.from_name("db")]`.')
    return tuple(refs)


def _function_fields(where: str, kwargs: dict[str, Any], default_image: Image) -> dict[str, Any]:
    """Validate `stub.function` keywords and turn them into FunctionSpec fields."""
    fields: dict[str, Any] = {"image": default_image.spec}
    image, env = default_image, None
    for key, value in kwargs.items():
        target = _FUNCTION_KEYWORDS.get(key)
        if target is None and key in _OTHER_KEYWORDS:
            if key == "env" and value:
                env = _env(where, value)
            _check_other(where, key, value)
            continue
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
            image = value
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
            fields[target] = fields.get(target, ()) + _secrets(where, value)  # `secret=` and `secrets=` add up
        elif target == "retries":
            fields[target] = policy(value)
        elif target == "gpu":
            try:
                fields[target] = canonical_gpu(value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}.") from None
        elif target in ("cpu", "memory"):
            if value is not None:
                fields[target], fields[f"{target}_limit"] = _resource(where, key, value)
        elif target == "ephemeral_disk":
            fields[target] = None if value is None else _int_in(where, key, value, 1, 3 * 1024 * 1024)
        elif target == "network":
            fields[target] = canonical_network(value, where)
        elif target == "fork":
            if not isinstance(value, bool):
                raise TypeError(f"{where}: `fork` must be True or False, got {value!r}.")
            fields[target] = value
        else:
            fields[target] = value
    if fields.get("allow_concurrent_inputs") is None:
        fields.pop("allow_concurrent_inputs", None)
    if env:  # Modal's `env=` is the image's environment variables, for this function only
        fields["image"] = image.env(env).spec
    return fields


def _resource(where: str, key: str, value: Any) -> tuple[Any, Any]:
    """`cpu=` (cores) or `memory=` (MiB): a request, or Modal's (request, limit)."""
    kind, unit = (float, "cores") if key == "cpu" else (int, "MiB")
    example = "cpu=0.5 or cpu=(0.5, 2.0)" if key == "cpu" else "memory=512 or memory=(512, 1024)"

    def number(part: Any) -> Any:
        if isinstance(part, bool) or not isinstance(part, (int, float) if kind is float else int) or not part > 0:
            raise ValueError(f"{where}: `{key}` takes a number of {unit} above 0, or a (request, limit) pair of them; "
                             f"got {value!r}. Write for example {example}.")
        return kind(part)

    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{where}: `{key}` as a tuple is (request, limit); got {value!r}. Write for example {example}.")
        request, limit = number(value[0]), number(value[1])
        if limit < request:
            raise ValueError(f"{where}: `{key}`'s limit {value[1]!r} is below its request {value[0]!r}; "
                             "a limit must be at least the request.")
        return request, limit
    return number(value), None


# Modal keywords without a spec field: honoured as they are, handled here, or refused.
_OTHER_KEYWORDS = {*NO_OPS, *REFUSED, "env", "is_generator", "name", "max_inputs", "single_use_containers"}


def _env(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError(f"{where}: `env` must be a dict of strings to strings, got {value!r}.")
    return value


def _check_other(where: str, key: str, value: Any) -> None:
    if key == "name" and value is not None:
        raise ValueError(f"{where}: `name={value!r}` cannot be honoured: a function's name is its Python name. "
                         "Rename the function, or give its URL a `label=`.")
    if key in ("single_use_containers", "max_inputs") and value not in (None, False):
        raise ValueError(f"{where}: `{key}={value!r}` cannot be honoured yet: this wisp reuses a container for "
                         "later inputs. Drop it, or reset state at the start of each call.")
    error = refusal(where, key, value)
    if error is not None:
        raise error


def _check_callable(where: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"{where} must decorate a function, got {obj!r}.")


def _method_of(fn: Any) -> tuple[str, str] | None:
    """(class path, method name) when `fn` was defined in a class body, read from its qualname.

    `Model.predict` is a method; `make.<locals>.inner` is a function nested in a function.
    """
    path, _, method = getattr(fn, "__qualname__", "").rpartition(".")
    if not path or path.endswith("<locals>"):
        return None
    return path, method


def _required_parameters(fn: Callable[..., Any], *, skip_self: bool) -> list[str] | None:
    """Names the caller would have to pass; None when Python cannot tell (builtins)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if skip_self and params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.default is p.empty and p.kind in kinds]


def _check_factory(where: str, fn: Callable[..., Any]) -> None:
    """ASGI/WSGI factories are called with no arguments (a method: on its instance) in the container."""
    required = _required_parameters(fn, skip_self=_method_of(fn) is not None)
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
    if getattr(fn, "__wisp_lifecycle__", None) is not None:
        raise _web_and_lifecycle(fn)
    if getattr(fn, "__wisp_function__", None) is not None:
        raise TypeError(
            f"{where} is below `@stub.function` here; put it closer to the function:\n"
            f"    @stub.function(...)\n    {where}\n    def {getattr(fn, '__name__', 'f')}(...): ..."
        )
    if web.kind != "webhook":
        _check_factory(where, fn)
    fn.__wisp_web__ = web
    return fn


def _forgot_parentheses(where: str, first: Any) -> None:
    """The modern stackable forms always take parentheses, as in Modal."""
    if first is not None:
        raise TypeError(
            f"Positional arguments are not allowed in {where}. Did you forget parentheses? "
            f"Suggestion: `{where}()`."
        )


def _web_decorator(where: str, first: Any, web: WebSpec) -> Callable[[F], F]:
    _forgot_parentheses(where, first)
    return lambda fn: _mark_web(where, fn, web)


def _check_web(where: str, requires_proxy_auth: Any = False, custom_domains: Any = None,
               wait_for_response: Any = True) -> bool:
    """Modal's web keywords: the other two are honoured as they are, or refused. Returns
    `requires_proxy_auth`, checked (a WebSpec field: the gateway asks for a proxy token)."""
    for key, value in (("custom_domains", custom_domains), ("wait_for_response", wait_for_response)):
        error = refusal(where, key, value)
        if error is not None:
            raise error
    if not isinstance(requires_proxy_auth, bool):
        raise TypeError(f"{where}: `requires_proxy_auth` must be True or False, got {requires_proxy_auth!r}.")
    return requires_proxy_auth


def _web_keywords(where: str, kwargs: dict[str, Any]) -> bool:
    """Pop the web keywords out of `@stub.webhook/asgi/wsgi(**kwargs)`; see `_check_web`."""
    return _check_web(where, kwargs.pop("requires_proxy_auth", False), kwargs.pop("custom_domains", None),
                      kwargs.pop("wait_for_response", True))


def fastapi_endpoint(
    _warn_parentheses_missing: Any = None, *, method: str = "GET", label: str | None = None, docs: bool = False,
    custom_domains: Any = None, requires_proxy_auth: bool = False, wait_for_response: bool = True,
) -> Callable[[F], F]:
    """Mark a function as a FastAPI endpoint; stack under `@stub.function(...)`."""
    where = "@wisp.fastapi_endpoint"
    proxy_auth = _check_web(where, requires_proxy_auth, custom_domains, wait_for_response)
    web = WebSpec("webhook", _check_method(where, method), label, docs, requires_proxy_auth=proxy_auth)
    return _web_decorator(where, _warn_parentheses_missing, web)


web_endpoint = fastapi_endpoint


def asgi_app(_warn_parentheses_missing: Any = None, *, label: str | None = None, custom_domains: Any = None,
             requires_proxy_auth: bool = False, wait_for_response: bool = True) -> Callable[[F], F]:
    """Mark a function that returns an ASGI app; stack under `@stub.function(...)`."""
    proxy_auth = _check_web("@wisp.asgi_app", requires_proxy_auth, custom_domains, wait_for_response)
    return _web_decorator("@wisp.asgi_app", _warn_parentheses_missing,
                          WebSpec("asgi", label=label, requires_proxy_auth=proxy_auth))


def wsgi_app(_warn_parentheses_missing: Any = None, *, label: str | None = None, custom_domains: Any = None,
             requires_proxy_auth: bool = False, wait_for_response: bool = True) -> Callable[[F], F]:
    """Mark a function that returns a WSGI app; stack under `@stub.function(...)`."""
    proxy_auth = _check_web("@wisp.wsgi_app", requires_proxy_auth, custom_domains, wait_for_response)
    return _web_decorator("@wisp.wsgi_app", _warn_parentheses_missing,
                          WebSpec("wsgi", label=label, requires_proxy_auth=proxy_auth))


def web_server(
    port: Any = None, *, startup_timeout: float = 5.0, label: str | None = None, custom_domains: Any = None,
    requires_proxy_auth: bool = False,
) -> Callable[[F], F]:
    """Mark a function that starts an HTTP server listening on `port` (any server, in any
    language); the gateway proxies HTTP and WebSockets to it. Stack under `@stub.function(...)`.

    The container counts as ready once the port accepts connections, at most `startup_timeout`
    seconds after the function was called. The port is also in `$PORT`; see the docs for
    several containers of one function on one machine.
    """
    where = "@wisp.web_server"
    proxy_auth = _check_web(where, requires_proxy_auth, custom_domains)
    if callable(port):
        raise TypeError(f"{where} needs the port the server listens on. Did you forget it? "
                        f"Suggestion: `{where}(8000)`.")
    if port is None:
        raise TypeError(f"{where} needs the port the server listens on: `{where}(8000)`.")
    port = _int_in(where, "port", port, 1, 65535)
    if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) or \
            not 0 < startup_timeout <= 3600:
        raise ValueError(f"{where}: `startup_timeout` must be a number of seconds above 0 and at most 3600, "
                         f"got {startup_timeout!r}.")
    web = WebSpec("web_server", label=label, port=port, startup_timeout=float(startup_timeout),
                  requires_proxy_auth=proxy_auth)
    return lambda fn: _mark_web(where, fn, web)


# A web server handles concurrency itself, and on the local runtime a second container of the
# same function would want the same port: one container takes this many requests by default.
WEB_SERVER_INPUTS = 1000


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
        if inspect.isclass(fn) and "__wisp_cls__" in vars(fn):
            raise TypeError(f"{where} is above `@stub.cls` here; put it under `@stub.cls(...)`, closer to the class.")
        if getattr(fn, "__wisp_function__", None) is not None:
            raise TypeError(f"{where} is below `@stub.function` here; put it closer to the function.")
        fn.__wisp_concurrent__ = (max_inputs, target_inputs)  # type: ignore[attr-defined]  # a mark on the user's object, read back by getattr
        return fn

    return mark


# -- container lifecycle (S12) -----------------------------------------------------------------
ENTER, EXIT = "enter", "exit"


def _web_and_lifecycle(fn: Any) -> TypeError:
    return TypeError(
        f"`{getattr(fn, '__name__', fn)}` is marked both as a web endpoint and as an enter/exit hook. "
        "Hooks run once per container and are not served: put them on separate methods."
    )


def _check_hook(where: str, fn: Any) -> None:
    """Hooks are called on the container's instance with no other arguments."""
    if not callable(fn):
        raise TypeError(f"{where} must decorate a method, got {fn!r}.")
    if getattr(fn, "__wisp_web__", None) is not None:
        raise _web_and_lifecycle(fn)
    name = getattr(fn, "__name__", "hook")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{where} marks a method of a class; `{name}` takes no `self`. Write `def {name}(self): ...`.")
    required = _required_parameters(fn, skip_self=True)
    if required:
        raise TypeError(
            f"{where}: the container calls `{name}` with no arguments besides `self`, but it requires "
            f"{', '.join(required)}. Give them defaults, or read them from class attributes or the environment."
        )


def _lifecycle_decorator(where: str, kind: str, first: Any) -> Callable[[F], F]:
    _forgot_parentheses(where, first)

    def mark(fn: F) -> F:
        _check_hook(where, fn)
        fn.__wisp_lifecycle__ = kind  # type: ignore[attr-defined]  # a mark on the user's object, read back by getattr
        return fn

    return mark


def enter(_warn_parentheses_missing: Any = None, *, snap: bool = False) -> Callable[[F], F]:
    """Mark a method to run once per container before it takes requests (load weights here).

    `snap` is accepted for Modal scripts; wisp has no memory snapshots, so the method just runs.
    """
    return _lifecycle_decorator("@wisp.enter", ENTER, _warn_parentheses_missing)


def exit(_warn_parentheses_missing: Any = None) -> Callable[[F], F]:
    """Mark a method to run once when the container shuts down."""
    return _lifecycle_decorator("@wisp.exit", EXIT, _warn_parentheses_missing)


def class_members(klass: type) -> dict[str, Any]:
    """The class's attributes by name, base classes first, each in definition order (as Modal)."""
    members: dict[str, Any] = {}
    for base in reversed(klass.__mro__):
        if base is not object:
            members.update(vars(base))
    return members


def lifecycle_hooks(klass: type, kind: str) -> list[str]:
    """Names of the methods marked `@wisp.enter()` (kind ENTER) or `@wisp.exit()`, in order."""
    return [name for name, value in class_members(klass).items()
            if inspect.isfunction(value) and getattr(value, "__wisp_lifecycle__", None) == kind]


def _class_path(klass: type) -> str:
    """Where the container finds the class: its dotted path in the module.

    A class defined inside a function has none; the stub keeps the class object for it, under
    the part of its qualname after `<locals>.`.
    """
    return klass.__qualname__.rpartition("<locals>.")[2]


def _web_methods(where: str, klass: type) -> dict[str, Any]:
    """The methods of an `@stub.cls` class marked as web endpoints; misuse fails here, at import."""
    webs = {}
    for name, value in class_members(klass).items():
        wrapped = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if not inspect.isfunction(wrapped):
            continue  # other class attributes (values, properties, proxies) are the user's business
        if getattr(wrapped, "__wisp_function__", None) is not None:
            raise TypeError(
                f"{where}: `{klass.__name__}.{name}` has its own `@stub.function`/`@stub.webhook`; inside "
                f"`@stub.cls` mark web methods with `@wisp.fastapi_endpoint()` (or `asgi_app()`, `wsgi_app()`)."
            )
        if getattr(wrapped, "__wisp_web__", None) is None and getattr(value, "__wisp_web__", None) is None:
            continue
        if wrapped is not value:
            raise TypeError(
                f"{where}: `{klass.__name__}.{name}` must be a plain method (`def {name}(self, ...)`) "
                "to be served; static and class methods are not."
            )
        webs[name] = value
    return webs


def _check_constructible(where: str, klass: type) -> None:
    """The container makes the instance with `klass()` and calls `__enter__()` on it."""
    # The __init__ that klass() runs: the first in the MRO (read from the class dicts, so no
    # instance-level lookup is implied).
    init = next((c.__dict__["__init__"] for c in klass.__mro__ if "__init__" in c.__dict__), object.__init__)
    required = _required_parameters(init, skip_self=True) if init is not object.__init__ else []
    if required:
        raise TypeError(
            f"{where}: the container creates `{klass.__name__}()` with no arguments, but its `__init__` requires "
            f"{', '.join(required)}. Give them defaults, or set them up in an `@wisp.enter()` method."
        )
    enter_dunder = getattr(klass, "__enter__", None)
    if inspect.isfunction(enter_dunder):
        _check_hook(f"{where}: `{klass.__name__}.__enter__`", enter_dunder)


class Stub:
    """A group of functions served or deployed together: `stub = wisp.Stub("my-app")`."""

    def __init__(self, name: str | None = None, *, image: Image | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f"Stub name must be a non-empty string, got {name!r}.")
        if image is not None and not isinstance(image, Image):
            raise TypeError(f"Stub(image=...) must be a wisp.Image, got {image!r}.")
        self.name = name
        self.image = image or Image.debian_slim()
        # The module that made the stub: `stub.serve()`/`stub.run()` ship that script, not
        # whichever script imported the stub from it.
        caller = inspect.currentframe()
        self._module = caller.f_back.f_globals.get("__name__") if caller and caller.f_back else None
        self._functions: dict[str, tuple[Callable[..., Any], FunctionSpec]] = {}
        self._classes: dict[str, type] = {}  # @stub.cls classes by path, for the container
        self._entrypoints: dict[str, Callable[..., Any]] = {}  # @stub.local_entrypoint(), for `wisp run`

    def _register(self, where: str, fn: Callable[..., Any], web: WebSpec | None, fields: dict[str, Any]) -> None:
        _check_callable(where, fn)
        name = fn.__name__
        method = _method_of(fn)
        if method is not None:  # the seed's form: `@stub.webhook` on a method in a class body
            if "<locals>" in method[0]:
                raise TypeError(
                    f"{where} decorates `{method[0].rpartition('.')[2]}.{method[1]}`, a method of a class defined "
                    "inside a function; the container cannot import that class. Define the class at module level."
                )
            name = ".".join(method)
            fields = {**fields, "cls": method[0], "method_name": method[1]}
        self._add(where, name, fn, web, fields, getattr(fn, "__wisp_concurrent__", None))
        spec = fn.__wisp_function__ = self._functions[name][1]  # type: ignore[attr-defined]  # a mark on the user's object, read back by getattr
        if method is None:  # `f.remote()`, `f.map()`, `f.spawn()`, `f.local()` (S: calls between functions)
            FunctionHandle(fn, name, web is not None, spec.retries).attach()

    def _check_free(self, where: str, name: str, fn: Callable[..., Any]) -> None:
        if name in self._functions and self._functions[name][0] is not fn:
            raise ValueError(
                f"{where}: this stub already has a function named `{name}`. Rename one of them."
            )

    def _add(self, where: str, name: str, fn: Callable[..., Any], web: WebSpec | None, fields: dict[str, Any],
             concurrency: tuple[int, int | None] | None) -> None:
        self._check_free(where, name, fn)
        if concurrency is not None:
            fields = {**fields, "allow_concurrent_inputs": concurrency[0], "target_inputs": concurrency[1]}
        elif web is not None and web.kind == "web_server" and "allow_concurrent_inputs" not in fields:
            fields = {**fields, "allow_concurrent_inputs": WEB_SERVER_INPUTS}
        self._functions[name] = (fn, FunctionSpec(name=name, web=web, **fields))

    # Each decorator works bare (`@stub.function`) and called (`@stub.function(...)`): the
    # overloads give both forms their real types, so a checker sees the decorated function.
    @overload
    def function(self, _fn: F, /) -> F: ...
    @overload
    def function(self, _fn: None = None, /, **kwargs: Any) -> Callable[[F], F]: ...

    def function(self, _fn: Any = None, /, **kwargs: Any) -> Any:
        """Register a function; stack `@wisp.fastapi_endpoint()` etc. under it to serve it."""
        where = "@stub.function"
        fields = _function_fields(where, kwargs, self.image)

        def wrap(fn: F) -> F:
            self._register(where, fn, getattr(fn, "__wisp_web__", None), fields)
            return fn

        return _bare_or_factory(where, _fn, wrap, "@stub.function(timeout=60)")

    @overload
    def webhook(self, _fn: F, /) -> F: ...
    @overload
    def webhook(self, _fn: None = None, /, *, method: str = "GET", label: str | None = None, docs: bool = False,
                **kwargs: Any) -> Callable[[F], F]: ...

    def webhook(
        self, _fn: Any = None, /, *, method: str = "GET", label: str | None = None, docs: bool = False, **kwargs: Any
    ) -> Any:
        """Serve a function as a FastAPI endpoint at the root of its own URL."""
        where = "@stub.webhook"
        if _fn is not None and not callable(_fn):
            raise _positional(where, _fn, f"@stub.webhook(method={_fn!r})")
        proxy_auth = _web_keywords(where, kwargs)
        web = WebSpec("webhook", _check_method(where, method), label, docs, requires_proxy_auth=proxy_auth)
        fields = _function_fields(where, kwargs, self.image)

        def wrap(fn: F) -> F:
            self._register(where, fn, web, fields)
            return fn

        return _bare_or_factory(where, _fn, wrap, "@stub.webhook(method=\"POST\")")

    def _app_decorator(self, where: str, kind: WebKind, first: Any, label: str | None, kwargs: dict[str, Any]) -> Any:
        web = WebSpec(kind, label=label, requires_proxy_auth=_web_keywords(where, kwargs))
        fields = _function_fields(where, kwargs, self.image)

        def wrap(fn: F) -> F:
            _check_callable(where, fn)
            _check_factory(where, fn)
            self._register(where, fn, web, fields)
            return fn

        return _bare_or_factory(where, first, wrap, f"{where}(image=image)")

    @overload
    def asgi(self, _fn: F, /) -> F: ...
    @overload
    def asgi(self, _fn: None = None, /, *, label: str | None = None, **kwargs: Any) -> Callable[[F], F]: ...

    def asgi(self, _fn: Any = None, /, *, label: str | None = None, **kwargs: Any) -> Any:
        """Serve the ASGI app (FastAPI, Starlette, ...) that the decorated function returns."""
        return self._app_decorator("@stub.asgi", "asgi", _fn, label, kwargs)

    @overload
    def wsgi(self, _fn: F, /) -> F: ...
    @overload
    def wsgi(self, _fn: None = None, /, *, label: str | None = None, **kwargs: Any) -> Callable[[F], F]: ...

    def wsgi(self, _fn: Any = None, /, *, label: str | None = None, **kwargs: Any) -> Any:
        """Serve the WSGI app (Flask, Django, ...) that the decorated function returns."""
        return self._app_decorator("@stub.wsgi", "wsgi", _fn, label, kwargs)

    @overload
    def cls(self, _cls: C, /) -> C: ...
    @overload
    def cls(self, _cls: None = None, /, **kwargs: Any) -> Callable[[C], C]: ...

    def cls(self, _cls: Any = None, /, **kwargs: Any) -> Any:
        """Register a class: `@wisp.enter()` methods run once per container before it takes
        requests, `@wisp.exit()` methods at shutdown, and each method marked
        `@wisp.fastapi_endpoint()` / `asgi_app()` / `wsgi_app()` is served as `Class.method`."""
        where = "@stub.cls"
        fields = _function_fields(where, kwargs, self.image)

        def wrap(klass: C) -> C:
            if not inspect.isclass(klass):
                raise TypeError(
                    f"{where} must decorate a class, got {klass!r}. "
                    "For a function write `@stub.function(...)` over `@wisp.fastapi_endpoint()`."
                )
            self._register_class(where, klass, fields)
            return klass

        return _bare_or_factory(where, _cls, wrap, "@stub.cls(timeout=60)")

    def _register_class(self, where: str, klass: type, fields: dict[str, Any]) -> None:
        path = _class_path(klass)
        if self._classes.get(path, klass) is not klass:
            raise ValueError(f"{where}: this stub already has a class named `{path}`. Rename one of them.")
        _check_constructible(where, klass)
        webs = _web_methods(where, klass)
        for name, fn in webs.items():  # check every name before recording any
            self._check_free(where, f"{path}.{name}", fn)
        concurrency = vars(klass).get("__wisp_concurrent__")
        self._classes[path] = klass
        klass.__wisp_cls__ = path  # type: ignore[attr-defined]  # a mark on the user's object, read back by getattr
        for name, fn in webs.items():
            self._add(where, f"{path}.{name}", fn, fn.__wisp_web__, {**fields, "cls": path, "method_name": name},
                      concurrency)

    @overload
    def local_entrypoint(self, _fn: F, /) -> F: ...
    @overload
    def local_entrypoint(self, _fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...

    def local_entrypoint(self, _fn: Any = None, /, *, name: str | None = None) -> Any:
        """Mark the function `wisp run script.py` runs in your own process, with the app running:
        in it, `f.remote()` and friends call the app's functions."""
        where = "@stub.local_entrypoint"

        def wrap(fn: F) -> F:
            _check_callable(where, fn)
            self._entrypoints[name or fn.__name__] = fn
            return fn

        return _bare_or_factory(where, _fn, wrap, "@stub.local_entrypoint()")

    @property
    def registered_entrypoints(self) -> dict[str, Callable[..., Any]]:
        return dict(self._entrypoints)

    def run(self) -> Any:
        """`with stub.run():` runs this stub's script as an ephemeral app for the block; inside,
        `f.remote()`, `.map()` and `.spawn()` call its functions."""
        from ._session.run import run_stub

        return run_stub(self)

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
        """Serve this stub's script as `wisp serve` would, until Ctrl-C; then return. Raises
        `wisp.exception.InvalidError` for a script that does not import, `ExecutionError` when
        the server cannot serve it."""
        from ._session.serve import serve_stub

        serve_stub(self, port=port)


App = Stub

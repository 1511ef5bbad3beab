"""URL labels: pure naming rules shared by the CLI and the gateway (tables, no I/O)."""
from __future__ import annotations

import itertools
import re

import pytest

from wisp._urls import MAX_LABEL, endpoint_urls, make_label, slug

LABEL_CHARS = re.compile(r"^[a-z0-9-]+$")
# A valid DNS label: no leading or trailing dash.
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
CUT_SUFFIX = re.compile(r"-[0-9a-f]{6}(-dev)?$")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hello", "hello"),
        ("my_app", "my-app"),
        ("MyApp", "myapp"),
        ("My_Big_App", "my-big-app"),
        ("a__b", "a-b"),
        ("a--b", "a-b"),
        ("a_-_b", "a-b"),
        ("_private_", "private"),
        ("hello.world", "hello-world"),
        ("my app!", "my-app"),
        ("v2_api", "v2-api"),
        ("café au lait", "caf-au-lait"),
        ("--x--", "x"),
    ],
)
def test_slug(name: str, expected: str) -> None:
    assert slug(name) == expected


@pytest.mark.parametrize(
    ("app", "function", "kwargs", "expected"),
    [
        ("app", "f", {}, "app--f"),
        ("my_app", "my_function", {}, "my-app--my-function"),
        ("MyApp", "Handler", {}, "myapp--handler"),
        ("my app!", "square", {}, "my-app--square"),
        ("hello.world", "fn_2", {}, "hello-world--fn-2"),
        ("a__b", "__c__", {}, "a-b--c"),
        # A `--` inside a name collapses, so the only `--` is the app/function separator.
        ("app--x", "f", {}, "app-x--f"),
        ("app", "f", {"dev": True}, "app--f-dev"),
        ("my_app", "F", {"dev": True}, "my-app--f-dev"),
        ("app", "f", {"label": "custom"}, "custom"),
        ("app", "f", {"label": "My_Label"}, "my-label"),
        ("app", "f", {"label": "My_Label", "dev": True}, "my-label-dev"),
        ("app", "f", {"label": None}, "app--f"),
        ("app", "f", {"label": ""}, "app--f"),
    ],
)
def test_make_label(app: str, function: str, kwargs: dict[str, object], expected: str) -> None:
    assert make_label(app, function, **kwargs) == expected  # type: ignore[arg-type]


# Pinned outputs: a deployed URL must not change between wisp versions.
@pytest.mark.parametrize(
    ("app", "function", "kwargs", "expected"),
    [
        ("a" * 40, "b" * 40, {}, "a" * 40 + "--" + "b" * 14 + "-15d169"),
        ("a" * 40, "b" * 40, {"dev": True}, "a" * 40 + "--" + "b" * 10 + "-4e065f-dev"),
        ("app", "f", {"label": "L" * 80}, "l" * 56 + "-25c79a"),
    ],
)
def test_long_label_is_cut_to_63_with_a_hash(app: str, function: str, kwargs: dict[str, object], expected: str) -> None:
    label = make_label(app, function, **kwargs)  # type: ignore[arg-type]
    assert label == expected
    assert len(label) == MAX_LABEL == 63
    assert CUT_SUFFIX.search(label)


def test_label_of_exactly_63_is_not_cut() -> None:
    app, function = "a" * 30, "b" * 31  # 30 + 2 + 31 = 63
    assert make_label(app, function) == f"{app}--{function}"


def test_label_of_64_is_cut() -> None:
    label = make_label("a" * 30, "b" * 32)
    assert len(label) == 63
    assert CUT_SUFFIX.search(label)


def test_cut_never_leaves_a_dash_before_the_hash() -> None:
    # The cut lands on the `--` separator: the dash is dropped rather than doubled.
    label = make_label("a" * 55, "b" * 20)
    assert "--" not in label
    assert re.fullmatch(r"a{55}-[0-9a-f]{6}", label)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("x" * 70 + "1", "f"), ("x" * 70 + "2", "f")),
        (("app", "f" * 80 + "a"), ("app", "f" * 80 + "b")),
        (("app", "long_function_name_" * 5), ("app", "long_function_name-" * 5 + "x")),
    ],
)
def test_long_names_differing_at_the_end_get_different_labels(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    a, b = make_label(*first), make_label(*second)
    assert a != b
    assert len(a) == len(b) == 63


def test_dev_and_deploy_labels_differ_even_when_cut() -> None:
    app, function = "a" * 50, "b" * 50
    assert make_label(app, function) != make_label(app, function, dev=True)
    assert make_label(app, function, dev=True).endswith("-dev")


_NAMES = ["a", "My_App", "x" * 63, "Z" * 100, "web.hooks v2", "__init__", "émoji_😀_name", "a-" * 40]
_CASES = [
    (app, function, label, dev)
    for (app, function), label, dev in itertools.product(
        itertools.product(_NAMES, ["f", "Z" * 100]), [None, "q" * 90], [False, True]
    )
]


@pytest.mark.parametrize(("app", "function", "label", "dev"), _CASES)
def test_label_is_always_a_valid_dns_label(app: str, function: str, label: str | None, dev: bool) -> None:
    result = make_label(app, function, label=label, dev=dev)
    assert LABEL_CHARS.match(result)
    assert DNS_LABEL.match(result)
    assert len(result) <= MAX_LABEL
    assert result.count("--") <= (0 if label else 1)
    assert result.endswith("-dev") == dev
    assert make_label(app, function, label=label, dev=dev) == result  # deterministic


@pytest.mark.parametrize(
    ("app", "function", "kwargs"),
    [
        ("app", "f", {"label": "!!!"}),  # -> '' (an empty host name)
        ("app", "f", {"label": "___", "dev": True}),  # -> '-dev'
        ("日本", "handler", {}),  # -> '--handler'
        ("app", "_", {}),  # -> 'app--'
    ],
)
def test_names_that_slug_to_nothing_are_refused_or_still_valid(
    app: str, function: str, kwargs: dict[str, object]
) -> None:
    try:
        result = make_label(app, function, **kwargs)  # type: ignore[arg-type]
    except ValueError:
        return  # refusing with a clear message is fine too
    assert DNS_LABEL.match(result)


@pytest.mark.parametrize(
    ("label", "port", "host", "expected"),
    [
        ("app--f", 8400, None, ("http://app--f.localhost:8400/", "http://127.0.0.1:8400/app--f/")),
        ("app--f-dev", 9000, None, ("http://app--f-dev.localhost:9000/", "http://127.0.0.1:9000/app--f-dev/")),
        ("custom", 80, "0.0.0.0", ("http://custom.localhost:80/", "http://0.0.0.0:80/custom/")),
        ("x", 8400, "192.168.1.5", ("http://x.localhost:8400/", "http://192.168.1.5:8400/x/")),
    ],
)
def test_endpoint_urls(label: str, port: int, host: str | None, expected: tuple[str, str]) -> None:
    urls = endpoint_urls(label, port) if host is None else endpoint_urls(label, port, host)
    assert urls == expected


@pytest.mark.parametrize(("name", "mode", "expected"), [("shop", "deploy", "shop"), ("shop", "serve", "shop-dev")])
def test_app_id_for(name: str, mode: str, expected: str) -> None:
    from wisp._urls import app_id_for

    assert app_id_for(name, mode) == expected

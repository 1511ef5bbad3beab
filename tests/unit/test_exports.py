"""The public surface of `wisp` is pinned here (STYLE rule 7): changing it is a decision."""
from __future__ import annotations

import pytest

import wisp

EXPECTED_EXPORTS = {
    "App", "FunctionCall", "Image", "Retries", "Secret", "Stub", "asgi_app", "concurrent", "enter", "exit", "exception",
    "fastapi_endpoint", "functions", "web_endpoint", "web_server", "wsgi_app",
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(wisp.__all__) == EXPECTED_EXPORTS
    assert len(wisp.__all__) == len(EXPECTED_EXPORTS), "duplicate names in wisp.__all__"


@pytest.mark.parametrize("name", sorted(EXPECTED_EXPORTS))
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(wisp, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from wisp import *", namespace)
    assert set(namespace) - {"__builtins__"} == EXPECTED_EXPORTS


@pytest.mark.parametrize(
    ("alias", "target"),
    [("App", "Stub"), ("web_endpoint", "fastapi_endpoint")],
)
def test_aliases_are_the_same_object(alias: str, target: str) -> None:
    assert getattr(wisp, alias) is getattr(wisp, target)


def test_app_is_stub() -> None:
    assert wisp.App is wisp.Stub


def test_version_is_a_string() -> None:
    assert isinstance(wisp.__version__, str) and wisp.__version__

"""resolve(): which label a request is for, and the root_path the app must know."""
from __future__ import annotations

import pytest

from wisp.server.gateway import resolve
from wisp.server.gateway.routing import resolve_raw

LABELS = {"my-app--square", "my-app--cube-dev", "other--f", "123"}

CASES = [
    # host, path, expected
    ("my-app--square.localhost:8000", "/", ("my-app--square", "")),
    ("my-app--square.localhost:8000", "/docs?x=1", ("my-app--square", "")),
    ("my-app--square.example.com", "/", ("my-app--square", "")),
    ("My-App--Square.LOCALHOST:8000", "/", ("my-app--square", "")),
    ("my-app--square", "/", ("my-app--square", "")),
    ("my-app--square:8000", "/", ("my-app--square", "")),
    ("123.localhost", "/", ("123", "")),
    ("127.0.0.1:8000", "/my-app--square/rest?q=1", ("my-app--square", "/my-app--square")),
    ("127.0.0.1:8000", "/my-app--square", ("my-app--square", "/my-app--square")),
    ("127.0.0.1:8000", "/my-app--square/", ("my-app--square", "/my-app--square")),
    ("127.0.0.1:8000", "/my-app--square?q=1", ("my-app--square", "/my-app--square")),
    ("localhost:8000", "/other--f/a/b", ("other--f", "/other--f")),
    ("", "/other--f/", ("other--f", "/other--f")),
    ("[::1]:8000", "/other--f/", ("other--f", "/other--f")),
    # the Host form wins over the path form
    ("my-app--square.localhost:8000", "/other--f/x", ("my-app--square", "")),
    # an IP literal never names a label, even one made of digits
    ("123.0.0.1:8000", "/other--f/", ("other--f", "/other--f")),
    # no match
    ("127.0.0.1:8000", "/", None),
    ("127.0.0.1:8000", "/nope/x", None),
    ("nope.localhost:8000", "/", None),
    ("127.0.0.1:8000", "//my-app--square/", None),
    ("127.0.0.1:8000", "/My-App--Square/", None),  # paths are case-sensitive
    ("127.0.0.1:8000", "/my-app--square-x/", None),
    ("127.0.0.1:8000", "*", None),
    ("localhost:8000", "http://my-app--square/", None),
    ("", "", None),
]


@pytest.mark.parametrize(("host", "path", "expected"), CASES)
def test_resolve(host: str, path: str, expected: tuple[str, str] | None) -> None:
    assert resolve(host, path, LABELS) == expected


@pytest.mark.parametrize(("host", "path", "expected"), CASES)
def test_resolve_raw_answers_as_resolve(host: str, path: str, expected: tuple[str, str] | None) -> None:
    for _ in range(2):  # the second time from the remembered Host
        assert resolve_raw(host.encode("latin-1"), path.encode("latin-1"), LABELS) == expected


def test_resolve_reads_a_live_mapping() -> None:
    routes: dict[str, object] = {}
    assert resolve("a.localhost", "/", routes) is None
    assert resolve_raw(b"a.localhost", b"/", routes) is None
    routes["a"] = object()
    assert resolve("a.localhost", "/", routes) == ("a", "")
    assert resolve_raw(b"a.localhost", b"/", routes) == ("a", "")

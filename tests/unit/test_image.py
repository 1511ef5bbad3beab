"""Images are immutable values hashed by content (STYLE rule 3): nothing is built here."""
from __future__ import annotations

import json
from typing import Any

import pytest

from wisp import Image

BASE = Image.debian_slim()


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (BASE.pip_install("a", "b"), BASE.pip_install("b", "a")),
        (BASE.pip_install("a").pip_install("b"), BASE.pip_install("b").pip_install("a")),
        (BASE.pip_install(["a", "b"]), BASE.pip_install("b", "a")),
        (BASE.pip_install(("a",), ["b"]), BASE.pip_install("a", "b")),
        (BASE.pip_install(["a", ["b", ("c",)]]), BASE.pip_install("c", "b", "a")),
        (BASE.pip_install("a", "a", "b"), BASE.pip_install("a", "b")),
        (BASE.pip_install("a").pip_install("a", "b"), BASE.pip_install("a", "b")),
        (BASE.pip_install(" a ", "b"), BASE.pip_install("a", "b")),
        (BASE.pip_install("a", "", "  "), BASE.pip_install("a")),
        (BASE.pip_install(), BASE),
        (BASE.pip_install([]), BASE),
        (Image.debian_slim("3.11").pip_install("x", "y"), Image.debian_slim("3.11").pip_install("y", "x")),
    ],
)
def test_same_packages_in_any_form_give_the_same_image(left: Image, right: Image) -> None:
    assert left.hash == right.hash
    assert left.spec == right.spec
    assert left == right
    assert hash(left) == hash(right)


@pytest.mark.parametrize(
    ("image", "pip"),
    [
        (BASE, []),
        (BASE.pip_install("b", "a"), ["a", "b"]),
        (BASE.pip_install(["requests>=2", "boto3"], "boto3"), ["boto3", "requests>=2"]),
        (BASE.pip_install("z").pip_install("y").pip_install("z"), ["y", "z"]),
    ],
)
def test_pip_list_is_sorted_and_deduplicated(image: Image, pip: list[str]) -> None:
    assert image.spec["pip"] == pip


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (BASE, BASE.pip_install("a")),
        (BASE.pip_install("a"), BASE.pip_install("b")),
        (BASE.pip_install("a"), BASE.pip_install("a", "b")),
        (BASE.pip_install("a==1"), BASE.pip_install("a==2")),
        (BASE, Image.debian_slim("3.11")),
        (Image.debian_slim("3.11"), Image.debian_slim("3.12")),
        (Image.debian_slim("3.11").pip_install("a"), BASE.pip_install("a")),
    ],
)
def test_different_content_gives_a_different_hash(left: Image, right: Image) -> None:
    assert left.hash != right.hash
    assert left != right


def test_hash_is_a_short_hex_digest() -> None:
    assert len(BASE.hash) == 16
    int(BASE.hash, 16)


def test_pip_install_returns_a_new_image_and_leaves_the_original_unchanged() -> None:
    original = Image.debian_slim("3.11").pip_install("a")
    spec_before, hash_before = original.spec, original.hash
    derived = original.pip_install("b")
    assert derived is not original
    assert original.spec == spec_before == {"base": "debian_slim", "python_version": "3.11", "pip": ["a"]}
    assert original.hash == hash_before
    assert derived.spec["pip"] == ["a", "b"]


def test_spec_is_a_copy() -> None:
    image = BASE.pip_install("a")
    image.spec["pip"].append("evil")
    image.spec["python_version"] = "3.99"
    assert image.spec == {"base": "debian_slim", "python_version": None, "pip": ["a"]}


def test_from_spec_copies_its_input() -> None:
    spec: dict[str, Any] = {"base": "debian_slim", "python_version": None, "pip": ["a"]}
    image = Image.from_spec(spec)
    spec["pip"].append("b")
    assert image.spec["pip"] == ["a"]


@pytest.mark.parametrize("version", [None, "3.10", "3.11", "3.12", "3.11.7", "3.9.18"])
def test_debian_slim_accepts_python_versions(version: str | None) -> None:
    assert Image.debian_slim(version).spec == {"base": "debian_slim", "python_version": version, "pip": []}


@pytest.mark.parametrize("version", ["3", "2.7", "3.x", "python3.11", "3.11.", "3.11.7.1", "", " 3.11", "latest"])
def test_debian_slim_rejects_bad_python_versions(version: str) -> None:
    with pytest.raises(ValueError) as info:
        Image.debian_slim(version)
    message = str(info.value)
    assert "python_version" in message
    assert "'3.11'" in message  # an example of what to write
    assert repr(version) in message  # and what was given


@pytest.mark.parametrize("version", [3.10, "3.11\n"], ids=["float-3.10", "trailing-newline"])
def test_debian_slim_rejects_python_versions_that_only_look_right(version: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        Image.debian_slim(version)


@pytest.mark.parametrize(
    "packages",
    [(3,), ("a", None), (["a", 1.5],), (object(),), (b"boto3",)],
    ids=["int", "none", "float-in-list", "object", "bytes"],
)
def test_pip_install_rejects_non_strings(packages: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError, match=r"pip_install\(\) takes package names as strings"):
        BASE.pip_install(*packages)


def test_pip_install_type_error_suggests_the_right_form() -> None:
    with pytest.raises(TypeError, match=r'\.pip_install\("boto3"'):
        BASE.pip_install(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (BASE, "Image.debian_slim()"),
        (Image.debian_slim("3.11"), "Image.debian_slim('3.11')"),
        (BASE.pip_install("b", "a"), "Image.debian_slim().pip_install('a', 'b')"),
        (Image.debian_slim("3.12").pip_install("x>=1"), "Image.debian_slim('3.12').pip_install('x>=1')"),
    ],
)
def test_repr(image: Image, expected: str) -> None:
    assert repr(image) == expected


@pytest.mark.parametrize(
    "image",
    [BASE, Image.debian_slim("3.11"), BASE.pip_install("boto3", "requests>=2"), Image.debian_slim("3.12.1").pip_install("a")],
)
def test_from_spec_round_trip_through_json(image: Image) -> None:
    again = Image.from_spec(json.loads(json.dumps(image.spec)))
    assert again == image
    assert again.hash == image.hash
    assert again.spec == image.spec
    assert repr(again) == repr(image)


def test_images_are_usable_as_dict_keys() -> None:
    cache = {BASE.pip_install("a", "b"): "built"}
    assert cache[BASE.pip_install("b", "a")] == "built"


def test_image_is_not_equal_to_its_spec() -> None:
    assert BASE != BASE.spec

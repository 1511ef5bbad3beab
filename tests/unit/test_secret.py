"""wisp.Secret: values recorded inline, names for the server, reprs that never show values."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import wisp
from wisp._image_steps import ImageSpec
from wisp._secret import parse_dotenv
from wisp._spec import FunctionSpec, SecretRef


def test_from_dict_keeps_values_but_repr_hides_them() -> None:
    secret = wisp.Secret.from_dict({"API_KEY": "s3cr3t-value", "UNSET": None})
    assert secret.ref.env == {"API_KEY": "s3cr3t-value"}
    assert secret.ref.keys == ("API_KEY",)
    assert "s3cr3t-value" not in repr(secret) and "s3cr3t-value" not in repr(secret.ref)
    spec = FunctionSpec(name="f", image=ImageSpec(), secrets=(secret.ref,))
    assert "s3cr3t-value" not in repr(spec)


def test_from_name_and_strings_are_named_refs() -> None:
    stub = wisp.Stub()

    @stub.webhook(secrets=[wisp.Secret.from_name("db", required_keys=["URL"]), "other"],
                  secret=wisp.Secret.from_dict({"A": "1"}))
    def f() -> None: ...

    refs = f.__wisp_function__.secrets
    assert [r.name for r in refs] == ["db", "other", None]
    assert refs[0].required_keys == ("URL",)


@pytest.mark.parametrize("bad", [123, object()])
def test_secrets_must_be_secrets(bad: object) -> None:
    with pytest.raises(TypeError, match="wisp.Secret"):
        wisp.Stub().webhook(secrets=[bad])


@pytest.mark.parametrize("env", [{"1X": "v"}, {"A-B": "v"}, {"K": 1}])
def test_from_dict_checks_keys_and_values(env: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        wisp.Secret.from_dict(env)


def test_from_name_checks_the_name() -> None:
    with pytest.raises(ValueError, match="not valid"):
        wisp.Secret.from_name("has space")


def test_spec_round_trip_keeps_values_and_old_name_lists() -> None:
    spec = FunctionSpec(name="f", image=ImageSpec(), secrets=(SecretRef("db"), wisp.Secret.from_dict({"K": "v"}).ref))
    assert FunctionSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    old = FunctionSpec.from_dict({"name": "f", "image": {}, "secrets": ["db"]})
    assert old.secrets == (SecretRef("db"),)
    assert spec.secrets[1].stripped().env is None and spec.secrets[1].stripped().keys == ("K",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB = two \n", {"A": "1", "B": "two"}),
        ("# comment\n\nexport C=3 # trailing\n", {"C": "3"}),
        ("D='lit # $x \\n'\n", {"D": "lit # $x \\n"}),
        ('E="a\\nb \\"q\\""\n', {"E": 'a\nb "q"'}),
        ('F="line1\nline2"\nG=g\n', {"F": "line1\nline2", "G": "g"}),
        ("H=\n", {"H": ""}),
        ("no equals sign\n", {}),
    ],
)
def test_parse_dotenv(text: str, expected: dict[str, str]) -> None:
    assert parse_dotenv(text) == expected


def test_from_dotenv_finds_the_file_upwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("TOKEN=abc\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.delenv("WISP_FUNCTION", raising=False)
    assert wisp.Secret.from_dotenv(tmp_path / "sub" / "app.py").ref.env == {"TOKEN": "abc"}
    monkeypatch.chdir(tmp_path / "sub")
    secret = wisp.Secret.from_dotenv()
    assert secret.ref.env == {"TOKEN": "abc"} and "abc" not in repr(secret)


def test_from_dotenv_missing_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WISP_FUNCTION", raising=False)
    with pytest.raises(FileNotFoundError, match="no .env-nope file"):
        wisp.Secret.from_dotenv(tmp_path, filename=".env-nope")


def test_inside_a_container_from_dotenv_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WISP_FUNCTION", "f")
    assert wisp.Secret.from_dotenv(tmp_path, filename=".env-nope").ref.env == {}


def test_app_spec_without_secret_values_keeps_key_names() -> None:
    from wisp._spec import AppSpec
    fn = FunctionSpec(name="f", image=ImageSpec(), secrets=(wisp.Secret.from_dict({"K": "hidden-v"}).ref, SecretRef("db")))
    stored = AppSpec(name="a", module="m", stub_attr="s", functions=(fn,)).without_secret_values()
    assert "hidden-v" not in json.dumps(stored.to_dict())
    assert stored.functions[0].secrets == (SecretRef(keys=("K",)), SecretRef("db"))

"""`wisp.Secret`: environment variables for a function's containers, by name or inline.

A Secret is a value recorded by decorators (STYLE rule 2). Inline values (from_dict,
from_dotenv, from_local_environ) travel in the spec to the server; a named one is resolved by the
server at deploy time. Values never appear in a repr.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._spec import SecretRef

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_VALUE = 32_768  # as Modal


def _in_container() -> bool:
    """Inside a container the script is imported again; the values are already in its environment."""
    return "WISP_FUNCTION" in os.environ


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"Secret name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit, e.g. `db-credentials`.")
    return name


def check_env(env: Mapping[Any, object], where: str) -> dict[str, str]:
    """Keys are environment variable names, values strings; None values are dropped (as Modal)."""
    out: dict[str, str] = {}
    for key, value in env.items():
        if value is None:
            continue
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"{where}: key {key!r} is not a valid environment variable name "
                             "(letters, digits and '_', not starting with a digit).")
        if not isinstance(value, str):
            raise TypeError(f"{where}: the value of {key} must be a string, got a {type(value).__name__}.")
        if len(value) > MAX_VALUE:
            raise ValueError(f"{where}: the value of {key} is longer than {MAX_VALUE} characters.")
        out[key] = value
    return out


def _unquote_double(text: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), "\\" + m.group(1)), text)


def parse_dotenv(text: str) -> dict[str, str]:
    """The `.env` format python-dotenv reads: `KEY=value` lines, `export KEY=...`, `#` comments,
    single quotes (literal) and double quotes (escapes; may span lines). No ${VAR} expansion."""
    out: dict[str, str] = {}
    pattern = re.compile(
        r"""^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.]*)[ \t]*=[ \t]*
            (?:'([^']*)'|"((?:\\.|[^"\\])*)"|([^\n]*?))[ \t]*(?:\#[^\n]*)?$""",
        re.MULTILINE | re.VERBOSE | re.DOTALL,
    )
    for match in pattern.finditer(text):
        key, single, double, bare = match.groups()
        if single is not None:
            out[key] = single
        elif double is not None:
            out[key] = _unquote_double(double)
        else:
            out[key] = re.sub(r"[ \t]+#.*$", "", bare or "").strip()
    return out


def find_dotenv(start: Path, filename: str) -> Path | None:
    """`filename` in `start` (a file's folder, when a file) or the nearest folder above it."""
    folder = start if start.is_dir() else start.parent
    for candidate in (folder, *folder.parents):
        if (candidate / filename).is_file():
            return candidate / filename
    return None


class Secret:
    """Environment variables for a function's containers: `secrets=[wisp.Secret.from_name("db")]`."""

    def __init__(self, ref: SecretRef, label: str) -> None:
        self._ref = ref
        self._label = label

    @property
    def ref(self) -> SecretRef:
        return self._ref

    @property
    def name(self) -> str | None:
        return self._ref.name

    def __repr__(self) -> str:  # never the values
        return self._label

    @staticmethod
    def from_name(name: str, *, environment_name: str | None = None,
                  required_keys: Iterable[str] = ()) -> Secret:
        """A secret created with `wisp secret create NAME KEY=VALUE`, looked up when you deploy."""
        if environment_name is not None:
            raise ValueError("Secret.from_name(environment_name=...): wisp has no environments; "
                             "leave it out, or give the secret another name per environment.")
        keys = tuple(required_keys)
        return Secret(SecretRef(name=check_name(name), required_keys=keys), f"Secret.from_name({name!r})")

    @staticmethod
    def from_dict(env_dict: Mapping[str, str | None] | None = None) -> Secret:
        """Values given in the script: `Secret.from_dict({"KEY": "value"})`."""
        env = check_env(dict(env_dict or {}), "Secret.from_dict")
        return _inline(env, f"Secret.from_dict(keys={sorted(env)})")

    @staticmethod
    def from_local_environ(env_keys: Iterable[str]) -> Secret:
        """Copy these variables from the environment of the process running `serve`/`deploy`."""
        keys = list(env_keys)
        if _in_container():
            return _inline({}, f"Secret.from_local_environ({keys})")
        missing = [k for k in keys if k not in os.environ]
        if missing:
            raise ValueError(f"Secret.from_local_environ: {', '.join(missing)} not set in this environment. "
                             "Export them before running `wisp serve`/`wisp deploy`.")
        return _inline(check_env({k: os.environ[k] for k in keys}, "Secret.from_local_environ"),
                       f"Secret.from_local_environ({keys})")

    @staticmethod
    def from_dotenv(path: str | os.PathLike[str] | None = None, *, filename: str = ".env") -> Secret:
        """The variables of a `.env` file: the nearest `filename` in `path`'s folder (the script's
        folder when None: `serve`/`deploy` import it there) or a folder above it."""
        if _in_container():  # the values came with the deploy; the file is not shipped
            return _inline({}, "Secret.from_dotenv()")
        start = Path(path) if path is not None else Path.cwd()
        found = find_dotenv(start.resolve(), filename)
        if found is None:
            raise FileNotFoundError(f"Secret.from_dotenv(): no {filename} file in {start.resolve()} or a folder "
                                    "above it. Create one, or pass the folder: `Secret.from_dotenv(__file__)`.")
        env = check_env(parse_dotenv(found.read_text()), f"Secret.from_dotenv({str(found)!r})")
        return _inline(env, f"Secret.from_dotenv({str(found)!r}, keys={sorted(env)})")


def _inline(env: dict[str, str], label: str) -> Secret:
    return Secret(SecretRef(env=env, keys=tuple(sorted(env))), label)

"""The public decorators keep the decorated object's type for a type checker (issue 12, point 7):
a user running mypy on a wisp script sees their own function, not `Any`."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

SCRIPT = '''
import wisp

stub = wisp.Stub()

@stub.function
def bare(x: int) -> int:
    return x

@stub.function(timeout=60)
def called(x: int) -> str:
    return str(x)

@stub.webhook(method="POST")
def hook(x: int) -> dict[str, int]:
    return {"x": x}

@stub.asgi(label="api")
def factory() -> object:
    return object()

@stub.cls(timeout=10)
class Model:
    pass

@stub.local_entrypoint()
def main() -> None:
    pass

reveal_type(bare)
reveal_type(called)
reveal_type(hook)
reveal_type(factory)
reveal_type(Model)
reveal_type(main)
'''

EXPECTED = [
    "def (x: int) -> int",
    "def (x: int) -> str",
    "def (x: int) -> dict[str, int]",
    "def () -> object",
    "def () -> script.Model",
    "def ()",
]


@pytest.fixture(scope="module")
def revealed(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("typing")
    (folder / "script.py").write_text(SCRIPT)
    out, err, _ = api.run(["--strict", "--no-incremental", "--cache-dir", str(folder / "cache"),
                           str(Path(folder / "script.py"))])
    assert not err and "error:" not in out, out + err
    return [line.split("Revealed type is ", 1)[1].strip('"') for line in out.splitlines() if "Revealed type" in line]


@pytest.mark.parametrize(("index", "expected"), list(enumerate(EXPECTED)))
def test_a_decorated_object_keeps_its_type(revealed: list[str], index: int, expected: str) -> None:
    assert revealed[index] == expected


TARGETS = '''
from wisp.server.gateway import Gateway, Lease, TargetUnavailable
from wisp.server.gateway._target import Admit, Deliver, Waiting


class Renamed:
    """A target whose fast path was renamed: once a silently disabled fast path, now an error."""

    timeout = 300.0
    strip_path_prefix = False
    call_param = b"__wisp_call_id"
    admit: Admit | None = None

    def try_acquire_now(self) -> Lease | None:
        return None

    def wait(self, deliver: Deliver) -> Waiting:
        raise TargetUnavailable(503, "none")


Gateway({"x": Renamed()})
'''


@pytest.mark.parametrize(("method", "errors"), [("try_acquire_now", 1), ("try_acquire", 0)])
def test_a_target_missing_a_member_the_gateway_uses_is_a_type_error(tmp_path: Path, method: str, errors: int) -> None:
    (tmp_path / "targets.py").write_text(TARGETS.replace("try_acquire_now", method))
    out, _, status = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
                              str(tmp_path / "targets.py")])
    assert status == errors, out
    if errors:
        assert '"Renamed"; expected "str": "Target"' in out, out


def test_every_type_ignore_says_why() -> None:
    """Each `type: ignore` in the package names its code and gives its reason after it."""
    src = Path(__file__).resolve().parents[2] / "src" / "wisp"
    bare = [f"{path.relative_to(src)}:{n}" for path in src.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if "type: ignore" in line and not re.search(r"type: ignore\[[a-z-, ]+\]  # \S", line)]
    assert bare == []

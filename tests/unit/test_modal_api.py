"""Modal's client API, the pure parts: app translation, the env lines, the token, and that every
RPC of Modal's service has a handler (implemented, or UNIMPLEMENTED with its name)."""
from __future__ import annotations

import asyncio
import shlex
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from grpclib import GRPCError, Status
from modal_proto.api_grpc import ModalClientBase

from wisp._call_wire import failure_frame, frame
from wisp.cli.modal_env import env_lines
from wisp.exception import ExecutionError, FunctionTimeoutError
from wisp.server.modal_api import calls, translate
from wisp.server.modal_api.service import ModalService
from wisp.server.modal_api.tokens import read_modal_token


@pytest.mark.parametrize(("mode", "state", "expected"), [
    ("deploy", "running", translate.APP_STATE_DEPLOYED),
    ("serve", "running", translate.APP_STATE_EPHEMERAL),
    ("run", "running", translate.APP_STATE_EPHEMERAL),
    ("deploy", "stopped", translate.APP_STATE_STOPPED),
    ("serve", "stopped", translate.APP_STATE_STOPPED),
    ("deploy", "failed", translate.APP_STATE_DISABLED),
])
def test_app_state(mode: str, state: str, expected: int) -> None:
    assert translate.app_state(mode, state) == expected


def test_the_numbers_are_modal_protos() -> None:
    from modal_proto import api_pb2
    assert (translate.APP_STATE_EPHEMERAL, translate.APP_STATE_DEPLOYED, translate.APP_STATE_STOPPED,
            translate.APP_STATE_DISABLED) == (api_pb2.APP_STATE_EPHEMERAL, api_pb2.APP_STATE_DEPLOYED,
                                              api_pb2.APP_STATE_STOPPED, api_pb2.APP_STATE_DISABLED)


@pytest.mark.parametrize(("described", "tasks"), [
    ({}, 0),
    ({"endpoints": [{"containers": {"ready": 2, "draining": 1}}]}, 2),
    ({"endpoints": [{"containers": {"busy": 1, "starting": 1}}], "functions": [{"containers": {"ready": 3}}]}, 5),
    ({"functions": [{"containers": {"failed": 4, "stopped": 1}}]}, 0),
])
def test_running_tasks_count_live_containers(described: dict[str, Any], tasks: int) -> None:
    assert translate.running_tasks(described) == tasks


def test_a_failed_app_says_why_in_its_description() -> None:
    item = translate.app_item({"id": "a", "name": "a", "mode": "deploy", "state": "failed", "error": "no image"}, 5.0)
    assert item.description == "a (failed: no image)" and item.state == translate.APP_STATE_DISABLED
    assert item.created_at == 5.0


@pytest.mark.parametrize("secret", ["ws-plain", "ws-with space", "ws-'quote'", 'ws-"dq"$HOME`x`'])
def test_env_lines_survive_a_shell(secret: str) -> None:
    lines = env_lines("http://127.0.0.1:8401", "wk-1", secret)
    out = subprocess.run(["sh", "-c", "\n".join(lines) + '\nprintf %s "$MODAL_TOKEN_SECRET"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == secret
    assert lines[0] == f"export MODAL_SERVER_URL={shlex.quote('http://127.0.0.1:8401')}"


def test_the_token_is_made_once_private_and_checked_whole(tmp_path: Path) -> None:
    assert read_modal_token(tmp_path) is None
    made = read_modal_token(tmp_path, create=True)
    assert made is not None and read_modal_token(tmp_path) == made
    assert stat.S_IMODE((tmp_path / "modal-token").stat().st_mode) == 0o600
    assert made.matches(made.id, made.secret)
    assert not made.matches(made.id, made.secret + "x")
    assert not made.matches("wk-other", made.secret)
    (tmp_path / "modal-token").write_text("{garbage")
    remade = read_modal_token(tmp_path, create=True)
    assert remade is not None and remade != made


def test_every_rpc_of_modals_service_has_a_handler() -> None:
    service = ModalService(manager=SimpleNamespace(calls=None))  # type: ignore[arg-type]  # the mapping needs no manager
    mapping = service.__mapping__()
    expected = {name for name in ModalClientBase.__abstractmethods__}
    assert {path.rsplit("/", 1)[1] for path in mapping} == expected
    assert len(expected) > 200  # the whole service, not a slice of it


def test_an_unimplemented_rpc_is_named_in_its_error() -> None:
    service = ModalService(manager=SimpleNamespace(calls=None))  # type: ignore[arg-type]  # the mapping needs no manager
    handler = service.__mapping__()["/modal.client.ModalClient/VolumeList"].func
    with pytest.raises(GRPCError) as caught:
        asyncio.run(handler(None))
    assert caught.value.status is Status.UNIMPLEMENTED
    assert "VolumeList" in str(caught.value.message)


def test_an_implemented_rpc_is_not_the_fallback() -> None:
    service = ModalService(manager=SimpleNamespace(calls=None))  # type: ignore[arg-type]  # the mapping needs no manager
    assert service.__mapping__()["/modal.client.ModalClient/AppList"].func == service.AppList


@pytest.mark.parametrize(("creation", "exists", "action"), [
    (translate.CREATION_UNSPECIFIED, True, "found"),
    (translate.CREATION_UNSPECIFIED, False, "missing"),
    (translate.CREATION_CREATE_IF_MISSING, True, "found"),
    (translate.CREATION_CREATE_IF_MISSING, False, "create"),
    (translate.CREATION_CREATE_FAIL_IF_EXISTS, True, "exists"),
    (translate.CREATION_CREATE_FAIL_IF_EXISTS, False, "create"),
    (translate.CREATION_CREATE_OVERWRITE_IF_EXISTS, True, "replace"),
    (translate.CREATION_CREATE_OVERWRITE_IF_EXISTS, False, "create"),
    (5, False, "unsupported"),  # ephemeral
    (4, True, "unsupported"),  # anonymous, owned by an app
])
def test_secret_action(creation: int, exists: bool, action: str) -> None:
    assert translate.secret_action(creation, exists) == action


def test_creation_types_are_modal_protos() -> None:
    from modal_proto import api_pb2
    assert (translate.CREATION_UNSPECIFIED, translate.CREATION_CREATE_IF_MISSING,
            translate.CREATION_CREATE_FAIL_IF_EXISTS, translate.CREATION_CREATE_OVERWRITE_IF_EXISTS) == (
        api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED, api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
        api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS, api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS)


@pytest.mark.parametrize(("name", "sid"), [("db", "st-db"), ("my-secret_1", "st-my-secret_1")])
def test_secret_ids_carry_the_name(name: str, sid: str) -> None:
    assert translate.secret_id(name) == sid and translate.secret_name(sid) == name


def test_a_foreign_secret_id_names_nothing() -> None:
    assert translate.secret_name("sc-123") is None


DAY = 86400.0
MIDNIGHT = 1_000_000 * DAY  # some local midnight


@pytest.mark.parametrize(("text", "expected"), [
    ("", []),
    ("10:00:00 a\n10:00:05 b\n", [MIDNIGHT + 36000, MIDNIGHT + 36005]),
    # written across midnight: the last line is today, the ones before it yesterday
    ("23:59:58 a\n00:00:01 b\n", [MIDNIGHT - DAY + 86398, MIDNIGHT + 1]),
    # two midnights back
    ("23:00:00 a\n23:00:00 b\n01:00:00 c\n02:00:00 d\n", [MIDNIGHT - DAY + 82800] * 2 + [MIDNIGHT + 3600, MIDNIGHT + 7200]),
    ("22:00:00 a\n01:00:00 b\n23:00:00 c\n00:30:00 d\n",
     [MIDNIGHT - 2 * DAY + 79200, MIDNIGHT - DAY + 3600, MIDNIGHT - DAY + 82800, MIDNIGHT + 1800]),
    # a line with no stamp takes the next line's
    ("rotated marker\n08:00:00 a\n", [MIDNIGHT + 28800, MIDNIGHT + 28800]),
])
def test_log_lines_get_full_timestamps(text: str, expected: list[float]) -> None:
    assert [ln.timestamp for ln in translate.dated_lines(text, MIDNIGHT)] == expected


def test_wisps_own_lines_are_system_lines() -> None:
    lines = translate.dated_lines("10:00:00 [wisp] deploy\n10:00:01 [f c1] hello\n", MIDNIGHT)
    assert [(ln.text, ln.system) for ln in lines] == [("10:00:00 [wisp] deploy", True),
                                                       ("10:00:01 [f c1] hello", False)]


LINES = translate.dated_lines("".join(f"10:00:0{i} line{i}\n" for i in range(6)), MIDNIGHT)


@pytest.mark.parametrize(("since", "until", "limit", "expected"), [
    (0, 0, 0, ["line0", "line1", "line2", "line3", "line4", "line5"]),
    (0, 0, 2, ["line4", "line5"]),  # the last ones, oldest first
    (MIDNIGHT + 36002, 0, 0, ["line2", "line3", "line4", "line5"]),  # since is inclusive
    (0, MIDNIGHT + 36002, 0, ["line0", "line1"]),  # until is exclusive
    (MIDNIGHT + 36001, MIDNIGHT + 36004, 2, ["line2", "line3"]),
    (MIDNIGHT + 40000, 0, 10, []),
])
def test_log_window(since: float, until: float, limit: int, expected: list[str]) -> None:
    assert [ln.text.split()[1] for ln in translate.log_window(LINES, since, until, limit)] == expected


@pytest.mark.parametrize(("answer", "status", "exception", "has_data"), [
    (frame("ok", 49), calls.STATUS_SUCCESS, "", True),
    (failure_frame(ValueError("negative"), "tb"), calls.STATUS_FAILURE, "ValueError: negative", True),
    # the server's own verdicts are wisp's classes, which a Modal client could not unpickle: text only
    (failure_frame(ExecutionError("the container went away"), ""), calls.STATUS_FAILURE,
     "ExecutionError: the container went away", False),
    (failure_frame(FunctionTimeoutError("past 60 s"), ""), calls.STATUS_TIMEOUT, "FunctionTimeoutError: past 60 s",
     False),
    (frame("item", 1), calls.STATUS_FAILURE, "ExecutionError: a generator's items", False),
    (b"garbage", calls.STATUS_FAILURE, "ExecutionError: the container's answer was not readable", False),
    (b"", calls.STATUS_FAILURE, "ExecutionError: the container answered nothing", False),
])
def test_an_answer_as_modals_result(answer: bytes, status: int, exception: str, has_data: bool) -> None:
    result = calls.result_of(answer)
    assert result.status == status and result.exception.startswith(exception) and bool(result.data) == has_data


def test_result_statuses_are_modal_protos() -> None:
    from modal_proto import api_pb2
    generic = api_pb2.GenericResult
    assert (calls.STATUS_SUCCESS, calls.STATUS_FAILURE, calls.STATUS_TIMEOUT) == (
        generic.GENERIC_STATUS_SUCCESS, generic.GENERIC_STATUS_FAILURE, generic.GENERIC_STATUS_TIMEOUT)


def test_a_successful_outputs_data_is_the_pickled_value_untouched() -> None:
    import pickle
    assert pickle.loads(calls.result_of(frame("ok", {"a": [1, 2]})).data) == {"a": [1, 2]}


def test_function_ids_are_stable_and_modal_shaped() -> None:
    from wisp.server.modal_api.drafts import stable_id
    one = stable_id("fu", "app/square")
    assert one == stable_id("fu", "app/square") != stable_id("fu", "app/cube")
    assert one.startswith("fu-") and len(one) == 25 and one[3:].isalnum()

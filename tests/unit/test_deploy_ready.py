"""What a new version must show before it is routed, and what a deploy that fails says (issue 11,
point 4); the CLI's bound on its own import of a script; what a server sharing its store with
others does to follow their deploys and stops (issue 14)."""
from __future__ import annotations

import pytest

from wisp._session.package import IMPORT_TIMEOUT, PackageError, import_timed_out, import_timeout
from wisp.server.apps import follow_actions, not_ready_message, proof_containers
from wisp.server.runtime import NotReady
from wisp.server.runtime.zygote import FunctionZygote
from wisp.server.store import AppRow


@pytest.mark.parametrize(("keep_warm", "replaced_running", "import_failed", "containers"), [
    (0, 0, False, 0),  # scale to zero, zygote imported: the zygote is the proof
    (0, 0, True, 1),  # the zygote could not import: a container importing it itself must be ready
    (1, 0, False, 1),  # a warm pool is ready before it is routed
    (2, 0, True, 2),
    (0, 3, False, 3),  # as warm as the version it replaces
    (1, 3, True, 3),
])
def test_containers_a_new_version_starts_before_it_is_routed(
        keep_warm: int, replaced_running: int, import_failed: bool, containers: int) -> None:
    assert proof_containers(keep_warm, replaced_running, import_failed) == containers


def test_a_failed_deploy_names_each_function_its_reason_and_what_keeps_serving() -> None:
    message = not_ready_message("shop", "shop", 4, 3, {
        "web": "importing the script did not finish within startup_timeout=5 s. Check ...",
        "Model": "container c9 exited while starting (code 1): RuntimeError: no model\nTraceback (most recent call last):"
                 "\nRuntimeError: no model",
    })
    assert message.splitlines() == [
        "Version 4 of shop did not become ready, so it was not switched in; version 3 keeps serving.",
        "  Model: container c9 exited while starting (code 1): RuntimeError: no model",
        "    Traceback (most recent call last):",
        "    RuntimeError: no model",
        "  web: importing the script did not finish within startup_timeout=5 s. Check ...",
        "Fix the script (`wisp app logs shop` has the whole output), then deploy again.",
    ]
    first = not_ready_message("shop-dev", "shop", 1, None, {"web": "boom"}, "serve")
    assert "nothing of it serves" in first and "`wisp app logs shop-dev`" in first
    assert first.endswith("then save it again.")  # `wisp serve` deploys again on each save


@pytest.mark.parametrize(("environ", "seconds"), [
    ({}, IMPORT_TIMEOUT),
    ({"WISP_IMPORT_TIMEOUT": ""}, IMPORT_TIMEOUT),
    ({"WISP_IMPORT_TIMEOUT": "3"}, 3.0),
    ({"WISP_IMPORT_TIMEOUT": " 0.5 "}, 0.5),
])
def test_the_import_timeout_comes_from_the_environment(environ: dict[str, str], seconds: float) -> None:
    assert import_timeout(environ) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_import_timeout_says_what_to_set(text: str) -> None:
    with pytest.raises(PackageError, match=rf"WISP_IMPORT_TIMEOUT must be a number of seconds above 0, got '{text}'"):
        import_timeout({"WISP_IMPORT_TIMEOUT": text})


def test_an_import_that_timed_out_says_so_with_its_last_output_and_what_to_check() -> None:
    message = import_timed_out("app.py", 3, "connecting\n\nstill connecting\nretrying\nretrying again\n")
    assert message.startswith("app.py did not finish importing within 3 s, so its app could not be read.")
    assert "\n  still connecting\n  retrying\n  retrying again\n" in message  # the last three lines
    assert "connecting\n  still" not in message
    assert "WISP_IMPORT_TIMEOUT" in message and "@enter()" in message
    assert "Its last output" not in import_timed_out("app.py", 3, "")


def test_an_import_past_startup_timeout_says_so_with_its_last_output_which_goes_to_the_log() -> None:
    zygote = FunctionZygote(None, None, "/nonexistent")  # type: ignore[arg-type]  (no process: only the message)
    zygote.printed = ["connecting to db:5432", "", "retrying"]
    logged: list[str] = []
    error = zygote._timed_out(5, logged.append)
    assert isinstance(error, NotReady)
    assert str(error).startswith("importing the script did not finish within startup_timeout=5 s "
                                 "(its last output: retrying). Check what it waits for at import")
    assert logged == zygote.printed
    zygote.printed = []
    assert "last output" not in str(zygote._timed_out(2.5, logged.append))
    assert "startup_timeout=2.5 s" in str(zygote._timed_out(2.5, logged.append))


# -- following the servers that share the store (issue 14) ----------------------------------------
def row(app_id: str, version: int, state: str = "running", mode: str = "deploy") -> AppRow:
    return AppRow(app_id, app_id, mode, state, version, 0.0, 0.0)


@pytest.mark.parametrize(("rows", "serving", "tried", "busy", "actions"), [
    ([row("a", 1)], {}, {}, set(), [("deploy", "a")]),  # deployed through another server
    ([row("a", 2)], {"a": 1}, {"a": 1}, set(), [("deploy", "a")]),  # redeployed there
    ([row("a", 2)], {"a": 2}, {}, set(), []),  # deployed here: never twice
    ([row("a", 2)], {}, {"a": 2}, set(), []),  # restored or followed here, even if it failed: not every tick
    ([row("a", 3)], {}, {"a": 2}, set(), [("deploy", "a")]),  # ...but a newer version is tried
    ([row("a", 2)], {"a": 1}, {}, {"a"}, []),  # a deploy or follow of it is under way here: a later tick
    ([row("a", 2, "stopped")], {"a": 2}, {}, set(), [("stop", "a")]),  # stopped through another server
    ([row("a", 2, "stopped")], {}, {"a": 2}, set(), []),  # not serving here: nothing to stop
    ([row("a-dev", 4, mode="serve"), row("r-run-x", 1, mode="run")], {}, {}, set(), []),  # CLI sessions' apps
    ([row("a", 1), row("b", 5, "stopped"), row("c", 7)], {"b": 5, "c": 7}, {}, set(),
     [("deploy", "a"), ("stop", "b")]),
])
def test_what_a_server_does_to_follow_its_store(rows: list[AppRow], serving: dict[str, int], tried: dict[str, int],
                                                busy: set[str], actions: list[tuple[str, str]]) -> None:
    assert [(action, r.id) for action, r in follow_actions(rows, serving, tried, busy)] == actions

"""The pure parts of calls: frames, retry delays, call routes (tables)."""
from __future__ import annotations

import pytest

from wisp import Retries
from wisp._call_wire import FrameReader, decode_frames, decode_input, encode_input, failure_frame, frame, raw_frames
from wisp._retries import delay, policy
from wisp._urls import CALL_LABEL_PREFIX, call_label


def test_inputs_round_trip_with_closures_and_kwargs() -> None:
    offset = 3
    args, kwargs = decode_input(encode_input((1, lambda x: x + offset), {"k": [1, 2]}))
    assert args[0] == 1 and args[1](1) == 4 and kwargs == {"k": [1, 2]}


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 1000])
def test_frames_arrive_in_chunks_of_any_size(chunk: int) -> None:
    data = frame("item", 1) + frame("item", "two") + frame("done", None)
    reader = FrameReader()
    got = [f for i in range(0, len(data), chunk) for f in reader.feed(data[i:i + chunk])]
    assert got == [("item", 1), ("item", "two"), ("done", None)]
    assert reader.pending == 0


def test_a_cut_answer_is_noticed() -> None:
    data = frame("ok", 42)
    with pytest.raises(ValueError, match="ends inside a frame"):
        decode_frames(data[:-1])


def test_an_exception_that_will_not_pickle_still_reaches_the_caller_as_text() -> None:
    import threading

    class Odd(Exception):
        def __init__(self) -> None:
            super().__init__("odd")
            self.lock = threading.Lock()  # locks do not pickle

    (kind, failure), = decode_frames(failure_frame(Odd(), "Traceback: here"))
    assert kind == "error" and failure.exception is None
    assert failure.summary == "Odd: odd" and failure.traceback == "Traceback: here"


@pytest.mark.parametrize(
    ("retries", "attempt", "expected"),
    [
        (None, 1, None),
        (0, 1, None),
        (2, 1, 1.0),
        (2, 2, 1.0),
        (2, 3, None),
        (Retries(max_retries=3, initial_delay=0.5, backoff_coefficient=2.0), 1, 0.5),
        (Retries(max_retries=3, initial_delay=0.5, backoff_coefficient=2.0), 3, 2.0),
        (Retries(max_retries=10, initial_delay=10, backoff_coefficient=3.0, max_delay=60), 4, 60.0),
    ],
)
def test_retry_delays(retries: object, attempt: int, expected: float | None) -> None:
    assert delay(policy(retries), attempt) == expected


@pytest.mark.parametrize("bad", [True, -1, 11, "3", 1.5])
def test_bad_retries_say_what_to_write(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="retries|max_retries"):
        policy(bad)


def test_call_routes_are_stable_internal_and_distinct() -> None:
    a = call_label("app", "f")
    assert a == call_label("app", "f") and a.startswith(CALL_LABEL_PREFIX)
    assert len({a, call_label("app", "g"), call_label("app-dev", "f"), call_label("ap", "pf")}) == 4
    assert call_label("x y/z", "Model.predict").replace("-", "").replace("_", "").isalnum()


class _Bomb:
    """A payload whose unpickling runs code: what a hostile container could send."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("raise SystemExit('unpickled!')",))


def test_frame_kinds_are_read_without_unpickling_the_payload() -> None:
    answer = frame("ok", _Bomb()) + frame("item", _Bomb())
    assert [raw.kind for raw in raw_frames(answer)] == ["ok", "item"]
    with pytest.raises(SystemExit, match="unpickled"):
        decode_frames(answer)  # the caller's path does load it (the caller is the app's own code)


@pytest.mark.parametrize("garbage", [b"\x00\x00\x00\x02\x09x", b"\x00\x00\x00\x00", b"\x00\x00\x00\x05ab"])
def test_bytes_that_are_not_frames_are_refused(garbage: bytes) -> None:
    with pytest.raises(ValueError):
        raw_frames(garbage)


def test_the_server_classifies_a_spawned_answer_from_kinds_only() -> None:
    from wisp.server.spawned import _outcome

    ok, kept = _outcome(frame("ok", _Bomb()), "f")
    assert ok and kept == frame("ok", _Bomb())
    assert _outcome(failure_frame(ValueError("x"), ""), "f")[0] is False
    failed, replaced = _outcome(b"not frames", "f")
    assert not failed and raw_frames(replaced)[0].kind == "error"


def test_an_errors_text_is_read_without_unpickling_its_exception() -> None:
    class Unloadable(Exception):
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('unpickled!')",))

    (raw,) = raw_frames(failure_frame(Unloadable("boom"), "Traceback ...\nUnloadable: boom"))
    assert (raw.kind, raw.summary, raw.traceback) == ("error", "Unloadable: boom", "Traceback ...\nUnloadable: boom")
    assert raw.data  # the exception, still pickled


def test_an_exception_that_will_not_pickle_arrives_as_text() -> None:
    import threading

    (kind, failure), = decode_frames(failure_frame(ValueError(threading.Lock()), "tb"))
    assert kind == "error" and failure.exception is None
    assert failure.summary.startswith("ValueError: <unlocked _thread.lock") and failure.traceback == "tb"

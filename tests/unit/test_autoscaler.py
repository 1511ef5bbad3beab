"""decide(): tables of observations -> desired containers, and walks through simulated time."""
from __future__ import annotations

import pytest

from wisp.server import autoscaler
from wisp.server.autoscaler import STANDBY_BUDGET, STANDBY_MAX, Observed, ScaleState, Settings, decide, standby_slots

DEFAULT = Settings()


@pytest.mark.parametrize(
    ("settings", "in_flight", "queued", "desired"),
    [
        (DEFAULT, 0, 0, 0),  # scaled to zero stays there
        (DEFAULT, 0, 1, 1),  # the first queued request starts a container at once
        (DEFAULT, 3, 5, 8),  # one request per container by default
        (Settings(target_per_container=4), 9, 0, 3),  # ceil(9 / 4)
        (Settings(target_per_container=4), 0, 1, 1),
        (Settings(max_containers=5), 10, 10, 5),  # the hard cap
        (Settings(min_containers=2), 0, 0, 2),  # the warm floor with no traffic
        (Settings(min_containers=2), 5, 0, 5),  # the floor is not added on top of demand
        (Settings(buffer_containers=2), 3, 0, 5),  # spare capacity while busy
        (Settings(buffer_containers=2), 0, 0, 0),  # ... and none while idle
        (Settings(min_containers=3, max_containers=2), 0, 0, 2),  # the cap wins over the floor
    ],
)
def test_decide_from_scratch(settings: Settings, in_flight: int, queued: int, desired: int) -> None:
    got, _ = decide(settings, Observed(in_flight, queued), 100.0, ScaleState())
    assert got == desired


def walk(settings: Settings, timeline: list[tuple[float, int]]) -> list[int]:
    """Feed (time, in_flight) observations in order; the desired count after each."""
    state = ScaleState()
    out = []
    for now, in_flight in timeline:
        desired, state = decide(settings, Observed(in_flight, 0), now, state)
        out.append(desired)
    return out


def test_scale_down_waits_a_whole_window_after_the_last_request() -> None:
    settings = Settings(scaledown_window=60)
    timeline = [(0, 4), (1, 0), (30, 0), (59.5, 0), (60, 0), (61, 0)]
    assert walk(settings, timeline) == [4, 4, 4, 4, 0, 0]


def test_scale_down_steps_through_lower_peaks() -> None:
    settings = Settings(scaledown_window=10)
    timeline = [(0, 8), (5, 3), (6, 0), (9.9, 0), (10, 0), (14.9, 0), (15, 0)]
    assert walk(settings, timeline) == [8, 8, 8, 8, 3, 3, 0]


def test_steady_load_never_flaps() -> None:
    settings = Settings(scaledown_window=5)
    # 3 requests in flight, sampled every 0.5 s, with brief dips to 2 between requests
    timeline = [(t / 2, 3 if t % 3 else 2) for t in range(1, 200)]
    desired = walk(settings, timeline)
    assert set(desired) == {3}


def test_new_peak_scales_up_immediately_inside_a_window() -> None:
    settings = Settings(scaledown_window=60)
    assert walk(settings, [(0, 2), (10, 0), (20, 7), (21, 0)]) == [2, 2, 7, 7]


def test_keep_warm_floor_survives_any_amount_of_idle_time() -> None:
    settings = Settings(min_containers=2, scaledown_window=2)
    timeline = [(t, 0) for t in range(0, 3600, 7)]
    assert set(walk(settings, timeline)) == {2}


def test_state_stays_small() -> None:
    settings = Settings(scaledown_window=3600)
    state = ScaleState()
    for t in range(10_000):
        _, state = decide(settings, Observed(10_000 - t, 0), float(t), state)
    assert len(state.peaks) <= 10_000
    _, state = decide(settings, Observed(20_000, 0), 10_001.0, state)
    assert len(state.peaks) == 1  # a new maximum replaces every smaller peak


# -- failed starts: backoff, the failed state, the clamp (issue 12, point 2) ------------------
@pytest.mark.parametrize(("failures", "delay"), [(0, 0.5), (1, 0.5), (2, 1), (3, 2), (4, 4), (6, 16), (7, 30), (50, 30)])
def test_backoff(failures: int, delay: float) -> None:
    assert autoscaler.backoff(failures) == delay


def test_failed_starts_count_up_back_off_and_a_ready_container_resets_them() -> None:
    state = autoscaler.ScaleState()
    for n, at in ((1, 100.0), (2, 101.0), (3, 103.0)):
        state = autoscaler.start_failed(at, state)
        assert state.failures == n and state.retry_at == at + autoscaler.backoff(n)
        assert not autoscaler.may_start(at, state) and autoscaler.may_start(state.retry_at, state)
        assert autoscaler.is_failed(state) is (n >= autoscaler.FAILED_AFTER)
    state = autoscaler.start_succeeded(state)
    assert (state.failures, state.retry_at, autoscaler.is_failed(state)) == (0, 0.0, False)


@pytest.mark.parametrize(("failures", "in_flight", "queued", "expected"), [
    (0, 0, 0, 5),  # no failures: the window's peak of 5 holds
    (1, 0, 0, 0),  # after a failed start: only real demand is retried, not a past peak
    (1, 0, 2, 2),
    (2, 3, 0, 3),
])
def test_after_failed_starts_only_current_demand_is_retried(failures: int, in_flight: int, queued: int,
                                                            expected: int) -> None:
    settings = autoscaler.Settings(scaledown_window=60)
    state = autoscaler.ScaleState(peaks=((0.0, 5),), failures=failures)
    desired, _ = autoscaler.decide(settings, autoscaler.Observed(in_flight, queued), 10.0, state)
    assert desired == expected


def test_a_clamp_never_goes_below_the_warm_pool() -> None:
    settings = autoscaler.Settings(min_containers=2, scaledown_window=60)
    state = autoscaler.ScaleState(peaks=((0.0, 5),), failures=1)
    assert autoscaler.decide(settings, autoscaler.Observed(0, 0), 10.0, state)[0] == 2


def test_prestarted_containers_are_a_peak_now() -> None:
    settings = autoscaler.Settings(scaledown_window=60)
    state = autoscaler.prestarted(3, 100.0, autoscaler.ScaleState(failures=0))
    assert autoscaler.decide(settings, autoscaler.Observed(0, 0), 159.0, state)[0] == 3
    assert autoscaler.decide(settings, autoscaler.Observed(0, 0), 160.5, state)[0] == 0
    assert autoscaler.prestarted(0, 100.0, state) is state


@pytest.mark.parametrize(("mean_duration", "slots"), [
    (0.0, STANDBY_MAX), (0.0001, STANDBY_MAX), (0.0125, STANDBY_MAX), (0.02, 2), (0.025, 2), (0.03, 1),
    (0.0499, 1), (0.05, 0), (1.0, 0),
])
def test_standby_slots_fit_the_budget(mean_duration: float, slots: int) -> None:
    assert standby_slots(mean_duration) == slots
    assert slots * mean_duration <= STANDBY_BUDGET

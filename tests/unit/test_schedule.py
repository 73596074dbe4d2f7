"""The adaptive schedule's rules (worker/schedule.py): pure, no I/O."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixverse_tracker.rules import schedule
from pixverse_tracker.rules.schedule import (
    Durations,
    Grid,
    Knowledge,
    Progress,
    Stage,
    adaptive_gap,
    queue_time_of,
    stage_of,
)

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def lognormal(count: int, median: float, sigma: float, seed: int = 1) -> Durations:
    rng = random.Random(seed)
    return Durations.of(rng.lognormvariate(math.log(median), sigma) for _ in range(count))


# Videos that take about 90 s from enqueue, of which about 60 s generating.
TYPICAL = Knowledge(completion=lognormal(1000, 90, 0.4), generation=lognormal(1000, 60, 0.15))


def test_durations_are_sorted_and_drop_what_is_not_a_duration() -> None:
    d = Durations.of([3.0, None, 1.0, -2.0, math.inf, math.nan, 2.0])
    assert d.values == (1.0, 2.0, 3.0)
    assert len(d) == 3


def test_the_cdf_counts_the_share_at_or_below_a_value() -> None:
    d = Durations.of([10.0, 20.0, 30.0, 40.0])
    assert [d.cdf(x) for x in (5, 10, 25, 40, 99)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_the_quantile_is_the_smallest_observation_reaching_the_share() -> None:
    d = Durations.of([10.0, 20.0, 30.0, 40.0])
    assert [d.quantile(p) for p in (0.0, 0.25, 0.26, 0.5, 1.0)] == [10, 10, 20, 20, 40]
    with pytest.raises(ValueError):
        Durations().quantile(0.5)


def test_with_too_few_finished_videos_the_documented_prior_stands_in() -> None:
    few = Knowledge(completion=Durations.of(range(1, schedule.MIN_SAMPLES)))
    prior = Knowledge(completion=schedule.PRIOR_COMPLETION)
    for progress in (Progress(age=0), Progress(age=50), Progress(age=200)):
        assert adaptive_gap(progress, few, 15, 60) == adaptive_gap(progress, prior, 15, 60)
        assert adaptive_gap(progress, Knowledge(), 15, 60) == adaptive_gap(progress, prior, 15, 60)


def test_a_typical_duration_moves_the_prior_a_new_installation_times_videos_by() -> None:
    slow = schedule.prior_for(900.0)
    assert 850 < slow.quantile(0.5) < 950
    # videos said to take fifteen minutes: a fresh table does not look at a young one soon
    young = Progress(age=60)
    assert adaptive_gap(young, Knowledge(prior=slow), 15, 600) > adaptive_gap(
        young, Knowledge(), 15, 600
    )


def test_the_prior_says_one_to_a_few_minutes() -> None:
    prior = schedule.PRIOR_COMPLETION
    assert 85 < prior.quantile(0.5) < 95
    assert prior.quantile(0.05) > 30 and prior.quantile(0.95) < 300


def test_where_videos_often_finish_the_gap_is_the_floor() -> None:
    # at 90 s half of all videos are done: a look every floor seconds is worth it
    assert adaptive_gap(Progress(age=90), TYPICAL, 15, 60) == 15


def test_before_videos_usually_finish_the_first_look_waits() -> None:
    gap = adaptive_gap(Progress(age=0), TYPICAL, 15, 60)
    assert 40 < gap <= 60
    # ... as long as the chance of having finished stays under the target
    assert TYPICAL.completion.cdf(gap - 1) < schedule.CHECK_PROBABILITY


def test_older_than_every_video_seen_finishing_is_looked_at_only_at_the_cap() -> None:
    assert adaptive_gap(Progress(age=5000), TYPICAL, 15, 300) == 300


def test_past_the_quickest_finishers_seen_the_prior_times_a_young_video() -> None:
    # after a burst, the table holds only the first, quickest finishers (30-40 s)
    quick = Knowledge(completion=Durations.of(30 + i / 3 for i in range(schedule.MIN_SAMPLES)))
    young = Progress(age=60)
    assert adaptive_gap(young, quick, 10, 300) == adaptive_gap(
        young, Knowledge(completion=schedule.PRIOR_COMPLETION), 10, 300
    )
    assert adaptive_gap(young, quick, 10, 300) < 300
    # ... but older than the prior's last minutes, a video is stalled: the cap
    assert (
        adaptive_gap(
            Progress(age=schedule.PRIOR_COMPLETION.quantile(schedule.PRIOR_LAST_SHARE) + 1),
            quick,
            10,
            300,
        )
        == 300
    )


def test_generating_longer_than_any_video_seen_is_timed_by_age() -> None:
    long_run = Progress(age=90, stage=Stage.GENERATING, generating_for=500)
    assert adaptive_gap(long_run, TYPICAL, 15, 300) == adaptive_gap(
        Progress(age=90), TYPICAL, 15, 300
    )
    assert adaptive_gap(long_run, TYPICAL, 15, 300) == 15


def test_ids_sharing_a_request_reach_its_chance_together() -> None:
    assert schedule.share_probability(1) == schedule.CHECK_PROBABILITY
    for share in (2, 10, 40):
        p = schedule.share_probability(share)
        assert 1 - (1 - p) ** share == pytest.approx(schedule.CHECK_PROBABILITY)
    # forty videos of one account, all young: one list request is worth it much sooner
    young = Progress(age=20)
    alone = adaptive_gap(young, TYPICAL, 10, 300)
    shared = adaptive_gap(young, TYPICAL, 10, 300, schedule.share_probability(40))
    assert shared < alone


def test_a_generating_video_is_timed_by_how_long_it_has_been_generating() -> None:
    just_started = Progress(age=200, stage=Stage.GENERATING, generating_for=1)
    nearly_done = Progress(age=200, stage=Stage.GENERATING, generating_for=60)
    early = adaptive_gap(just_started, TYPICAL, 10, 60)
    assert early > 40  # generation takes ~60 s: nothing before ~45 s
    assert adaptive_gap(nearly_done, TYPICAL, 10, 60) == 10


def test_a_queued_video_waits_at_least_for_a_generation() -> None:
    queued = adaptive_gap(Progress(age=100, stage=Stage.QUEUED), TYPICAL, 10, 300)
    assert queued >= TYPICAL.generation.quantile(schedule.CHECK_PROBABILITY)


def test_a_queue_estimate_only_ever_lengthens_the_wait() -> None:
    plain = adaptive_gap(Progress(age=100, stage=Stage.QUEUED), TYPICAL, 10, 300)
    estimated = adaptive_gap(
        Progress(age=100, stage=Stage.QUEUED, queue_time=200), TYPICAL, 10, 300
    )
    assert estimated == pytest.approx(plain + 100)


def test_a_video_queued_for_hours_is_not_looked_at_more_often_than_its_age_says() -> None:
    stalled = adaptive_gap(Progress(age=7200, stage=Stage.QUEUED), TYPICAL, 10, 300)
    assert stalled == 300


def test_without_generation_times_a_generating_video_falls_back_to_its_age() -> None:
    no_runs = Knowledge(completion=TYPICAL.completion)
    progress = Progress(age=90, stage=Stage.GENERATING, generating_for=5)
    assert adaptive_gap(progress, no_runs, 15, 60) == adaptive_gap(
        Progress(age=90), no_runs, 15, 60
    )


@given(
    age=st.floats(0, 40_000),
    stage=st.sampled_from(list(Stage)),
    generating_for=st.none() | st.floats(0, 40_000),
    queue_time=st.none() | st.floats(0.001, schedule.MAX_QUEUE_TIME),
    floor=st.floats(0.1, 100),
    extra=st.floats(0, 1000),
)
def test_the_gap_lies_between_the_floor_and_the_cap_unless_a_finish_is_ruled_out(
    age: float,
    stage: Stage,
    generating_for: float | None,
    queue_time: float | None,
    floor: float,
    extra: float,
) -> None:
    cap = floor + extra
    progress = Progress(age, stage, generating_for, queue_time)
    gap = adaptive_gap(progress, TYPICAL, floor, cap)
    # Past the cap only while the video cannot have finished yet by what was observed.
    assert floor <= gap <= max(cap, schedule.cannot_finish_for(progress, TYPICAL))


def test_stages_come_from_the_status_code() -> None:
    assert stage_of(5) is Stage.QUEUED
    assert stage_of(9) is Stage.GENERATING and stage_of(10) is Stage.GENERATING
    assert stage_of(1) is Stage.UNKNOWN and stage_of(None) is Stage.UNKNOWN


@pytest.mark.parametrize(
    ("queue_data", "expected"),
    [
        ({"queue_time": 30, "queue_count": 2}, 30.0),
        ({"queue_time": 12.5}, 12.5),
        ({"queue_time": 0}, None),
        ({"queue_time": -5}, None),
        ({"queue_time": "30"}, None),
        ({"queue_time": True}, None),
        ({"queue_time": 10**9}, None),
        ({}, None),
        (None, None),
        ("soon", None),
    ],
)
def test_only_a_plausible_queue_time_is_read(queue_data: object, expected: float | None) -> None:
    assert queue_time_of({"queue_data": queue_data}) == expected


# --- the account grid ----------------------------------------------------------------------------


def test_ids_of_one_account_snap_to_the_same_instants() -> None:
    grid = Grid.for_account("Team@Example.com", 10)
    assert Grid.for_account("team@example.com", 10) == grid  # emails compare caselessly
    a = grid.snap(NOW + timedelta(seconds=3.2))
    b = grid.snap(NOW + timedelta(seconds=4.9))
    assert a == b or abs((a - b).total_seconds()) == 10


def test_a_snap_moves_a_time_by_at_most_half_a_period_onto_a_fixed_point() -> None:
    grid = Grid.for_account("a@example.com", 10)
    for step in range(40):
        when = NOW + timedelta(seconds=step * 0.37)
        snapped = grid.snap(when)
        assert abs((snapped - when).total_seconds()) <= 5 + 1e-6
        assert grid.snap(snapped) == snapped


def test_accounts_are_spread_over_the_period() -> None:
    phases = {round(Grid.for_account(f"user{n}@example.com", 10).phase, 3) for n in range(50)}
    assert len(phases) > 40
    assert all(0 <= p < 10 for p in phases)


def test_snapping_at_or_before_never_moves_a_time_later() -> None:
    grid = Grid.for_account("a@example.com", 10)
    for step in range(60):
        when = NOW + timedelta(seconds=step * 0.37)
        snapped = grid.at_or_before(when)
        assert when - timedelta(seconds=10) < snapped <= when
        assert grid.at_or_before(snapped) == snapped
        assert grid.snap(snapped) == snapped  # the same instants as snap()

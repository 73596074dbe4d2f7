"""The latency contract as a property of the pure schedule (rules/timing.py, ``next_poll``).

Once a pending video could plausibly have finished, the next look comes at most
``TRACKER_POLL_INTERVAL_MAX`` after the last one (``TRACKER_SLOW_INTERVAL`` past
``TRACKER_SLOW_AFTER``), whatever the history: observed durations, the stage the upstream last
reported, the list grid, jitter, errors, shared requests. Only what our own table observed may
rule a finish out and so push a look past the cap.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pixverse_tracker.rules import schedule
from pixverse_tracker.rules.row import RowView
from pixverse_tracker.rules.schedule import Durations, Grid, Knowledge, Stage
from pixverse_tracker.rules.timing import cap_for, next_poll
from tests.policies import policy_with

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
DEFAULTS = policy_with()  # the production defaults, by id (tests/policies.py: the list off)

durations = st.lists(st.floats(0.5, 20_000), min_size=0, max_size=80).map(Durations.of)


@st.composite
def histories(draw: st.DrawFn) -> tuple[RowView, schedule.Progress, Knowledge]:
    age = draw(st.floats(0, 30_000))
    stage = draw(st.sampled_from(list(Stage)))
    generating_for = draw(st.none() | st.floats(0, age + 1))
    queue_time = draw(st.none() | st.floats(0.001, schedule.MAX_QUEUE_TIME))
    knowledge = Knowledge(completion=draw(durations), generation=draw(durations))
    row = RowView(
        "user:1-pixverse:a@example.com-video:1",
        NOW - timedelta(seconds=age),
        poll_count=draw(st.integers(0, 500)),
        error_count=draw(st.integers(0, 50)),
    )
    progress = schedule.Progress(age, stage, generating_for, queue_time)
    return row, progress, knowledge


@settings(max_examples=400)
@given(
    history=histories(),
    on_grid=st.booleans(),
    share=st.integers(1, 60),
    attempt=st.integers(0, 200),
    adaptive=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_next_look_comes_at_most_the_cap_after_this_one(
    history: tuple[RowView, schedule.Progress, Knowledge],
    on_grid: bool,
    share: int,
    attempt: int,
    adaptive: bool,
    seed: int,
) -> None:
    row, progress, knowledge = history
    policy = policy_with(list_interval=10.0, schedule="adaptive" if adaptive else "backoff")
    grid = Grid.for_account("a@example.com", 10.0) if on_grid else None
    due = next_poll(
        row,
        NOW,
        policy,
        random.Random(seed),
        attempt,
        progress=progress if adaptive else None,
        knowledge=knowledge if adaptive else None,
        grid=grid,
        share=share,
    )
    gap = (due - NOW).total_seconds()
    cap = cap_for(progress.age, policy)
    ruled_out = schedule.cannot_finish_for(progress, knowledge) if adaptive else 0.0
    assert 0 <= gap <= max(cap, ruled_out) + 1e-6


@given(history=histories(), seed=st.integers(0, 2**32 - 1))
def test_a_look_past_the_cap_is_taken_only_while_observed_videos_rule_a_finish_out(
    history: tuple[RowView, schedule.Progress, Knowledge], seed: int
) -> None:
    row, progress, knowledge = history
    due = next_poll(
        row, NOW, DEFAULTS, random.Random(seed), 1, progress=progress, knowledge=knowledge
    )
    gap = (due - NOW).total_seconds()
    if gap > cap_for(progress.age, DEFAULTS) + 1e-6:
        quickest_total = knowledge.completion.values[0] if len(knowledge.completion) else None
        quickest_run = knowledge.generation.values[0] if len(knowledge.generation) else None
        # Either younger than every video seen to finish, or not yet started / generating for
        # less than the quickest generation seen: a look before then could not find it done.
        assert (
            len(knowledge.completion) >= schedule.MIN_SAMPLES
            and quickest_total is not None
            and progress.age + gap <= quickest_total + 1e-6
        ) or (
            len(knowledge.generation) >= schedule.MIN_SAMPLES
            and quickest_run is not None
            and progress.stage in (Stage.QUEUED, Stage.GENERATING)
        )


def test_the_default_cap_is_fifteen_seconds_like_useapi_nets_own_loop() -> None:
    assert DEFAULTS.poll_interval_max == 15.0
    assert DEFAULTS.poll_interval_min <= DEFAULTS.poll_interval_max


def test_the_prior_alone_never_delays_a_look_past_the_cap() -> None:
    # A new installation knows nothing: only its own observations may rule out a finish.
    for age in (0.0, 5.0, 30.0, 200.0, 1000.0):
        for stage in Stage:
            progress = schedule.Progress(age, stage, generating_for=1.0)
            assert schedule.cannot_finish_for(progress, Knowledge()) == 0.0
            gap = schedule.adaptive_gap(progress, Knowledge(), 15.0, 15.0)
            assert gap == 15.0

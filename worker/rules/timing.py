"""When to look at a pending video next: backoff, the adaptive gap, the grid, the deadline."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from pixverse_tracker.rules import schedule
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.rules.row import RowView


def backoff_delay(attempt: int, policy: Policy, rng: random.Random, age: float = 0.0) -> float:
    """Capped exponential backoff with jitter, within [min, max] interval.

    Past ``slow_after`` seconds since enqueue the cap rises to ``slow_interval``: almost every
    video has finished by then, and the ones that have not (stalled queues, videos that never
    finish) would otherwise cost a poll a minute for hours.
    """
    low, high = policy.poll_interval_min, policy.poll_interval_max
    if age >= policy.slow_after:
        high = max(high, policy.slow_interval)
    base = min(high, low * 1.5 ** min(attempt, 64))
    floor = max(low, base * (1.0 - policy.jitter))
    return rng.uniform(floor, base) if base > floor else base


def deadline_of(row: RowView, policy: Policy) -> datetime:
    return row.enqueued_at + timedelta(seconds=policy.give_up_after)


def cap_for(age: float, policy: Policy) -> float:
    """The longest gap between two looks at a video of this age."""
    if age >= policy.slow_after:
        return max(policy.poll_interval_max, policy.slow_interval)
    return policy.poll_interval_max


def next_poll(
    row: RowView,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    attempt: int,
    sent_at: datetime | None = None,
    *,
    progress: schedule.Progress | None = None,
    knowledge: schedule.Knowledge | None = None,
    grid: schedule.Grid | None = None,
    share: int = 1,
) -> datetime:
    """The next poll time, never past the deadline, so the last poll lands at the deadline.

    With ``progress`` and ``knowledge`` (and the adaptive schedule) the gap comes from
    ``schedule.adaptive_gap``; otherwise (errors, ``TRACKER_SCHEDULE=backoff``) from backoff.
    On a ``grid`` (ids read through the list) the time snaps to the account's nearest instant,
    so siblings come due together; elsewhere it is jittered, so ids enqueued together drift
    apart. A poll sent before the deadline (even if answered after it) is not the last one:
    the next is placed at the deadline, which may already be due.
    """
    age = (now - row.enqueued_at).total_seconds()
    if policy.schedule == "adaptive" and progress is not None and knowledge is not None:
        floor = grid.period if grid is not None else policy.poll_interval_min
        cap = cap_for(age, policy)
        probability = schedule.share_probability(share if grid is not None else 1)
        gap = schedule.adaptive_gap(progress, knowledge, floor, cap, probability)
        # Past the cap only while a finish is ruled out: that wait is kept exact.
        if grid is None and policy.jitter > 0 and gap <= cap:
            # Around the gap, not below it: ids enqueued together drift apart without the
            # gaps shrinking on average (which would cost calls, as backoff's jitter does).
            spread = policy.jitter / 2
            gap = min(cap, max(floor, gap * rng.uniform(1.0 - spread, 1.0 + spread)))
    else:
        gap = backoff_delay(attempt, policy, rng, age)
    due = now + timedelta(seconds=gap)
    if grid is not None:
        # The instant at or before the due time: a grid never stretches a gap past the cap.
        # Only a gap shorter than the period (an error's backoff) moves on to the next one.
        snapped = grid.at_or_before(due)
        due = snapped if snapped > now else snapped + timedelta(seconds=grid.period)
    deadline = deadline_of(row, policy)
    return min(due, deadline) if (sent_at or now) < deadline else due


def first_poll_at(
    now: datetime,
    policy: Policy,
    knowledge: schedule.Knowledge | None = None,
    grid: schedule.Grid | None = None,
) -> datetime:
    """When a newly enqueued id is first looked at: after ``first_poll_delay`` at the earliest.

    The adaptive schedule waits longer when our table says videos hardly ever finish that
    early; on a grid, the first look is the account's next instant from then on, so it joins
    the list request of the ids already tracked there.
    """
    delay = policy.first_poll_delay
    # Only what was observed may delay the first look: the prior (Knowledge.prior)
    # is a guess, and TRACKER_FIRST_POLL_DELAY is what the operator asked for.
    observed = knowledge is not None and len(knowledge.completion) >= schedule.MIN_SAMPLES
    if policy.schedule == "adaptive" and knowledge is not None and observed:
        cap = max(delay, policy.poll_interval_max)
        delay = schedule.adaptive_gap(schedule.Progress(0.0), knowledge, delay, cap)
    due = now + timedelta(seconds=delay)
    if grid is not None:
        snapped = grid.snap(due)
        due = snapped if snapped >= due else snapped + timedelta(seconds=grid.period)
    return due


def started_since(row: RowView) -> datetime:
    """When a video first seen GENERATING now may have started: right after the look before.

    The earliest moment it can have, so the schedule errs towards looking early; the learned
    generation times are measured from the same point, which keeps both consistent.
    """
    return row.last_polled_at or row.enqueued_at


def progress_of(
    row: RowView, now: datetime, status_code: int | None, entry: dict[str, Any] | None
) -> schedule.Progress:
    """What the schedule needs to know: age, stage, time generating, queue estimate."""
    stage = schedule.stage_of(status_code)
    started = row.started_at
    if stage is schedule.Stage.GENERATING and started is None:
        started = started_since(row)
    return schedule.Progress(
        age=(now - row.enqueued_at).total_seconds(),
        stage=stage,
        generating_for=(now - started).total_seconds() if started is not None else None,
        queue_time=schedule.queue_time_of(entry)
        if entry is not None and stage is schedule.Stage.QUEUED
        else None,
    )

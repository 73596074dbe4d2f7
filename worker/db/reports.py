"""SQL that reads: the summary behind ``status``, ``health`` and the metrics, lists, one
video and its history, the durations the schedule learns from; and pruning old history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, delete, func, select, tuple_
from sqlalchemy.orm import Session

from pixverse_tracker.db.control import limiter_view
from pixverse_tracker.db.sql import current_time, table_of
from pixverse_tracker.models import (
    CONTROL_ROW_ID,
    PollMinute,
    TrackerControl,
    Video,
    VideoEvent,
    WebhookDelivery,
)
from pixverse_tracker.rules.events import EventKind
from pixverse_tracker.rules.limiter import LimiterView
from pixverse_tracker.rules.state import State


@dataclass(frozen=True)
class Summary:
    now: datetime
    counts: dict[str, int]
    due_now: int
    oldest_pending_id: str | None
    oldest_pending_since: datetime | None
    polls_last_hour: int
    errors_last_hour: int
    rate_limited_last_hour: int
    unauthorized_last_hour: int
    auth_failing: bool
    auth_error: str | None
    auth_failed_at: datetime | None
    auth_paused_until: datetime | None
    throttled_until: datetime | None
    rate_factor: float
    last_dispatch_at: datetime | None
    polls_last_5_minutes: int = 0
    errors_last_5_minutes: int = 0
    # Pending ids whose look is later than the latency contract allows (the cap past their
    # due time): the rate budget or the workers are short, or a 401/429 pause holds them.
    overdue: int = 0
    scheduler_read_at: datetime | None = None
    scheduler_ok_at: datetime | None = None
    scheduler_failures: int = 0
    scheduler_error: str | None = None
    scheduler_executing: int | None = None


def summary(session: Session, *, overdue_after: float) -> tuple[Summary, LimiterView]:
    """The counts and the control row's state, with the limiter as stored: ``rate_factor`` is
    the stored factor, which ``service.status.summary`` turns into the effective one (it climbs
    back after 429s). ``overdue_after``: seconds past due that miss the latency bound."""
    now = current_time(session)
    counts = {s.value: 0 for s in State}
    for state, count in session.execute(select(Video.state, func.count()).group_by(Video.state)):
        counts[state.value] = count
    due_now = session.execute(
        select(func.count())
        .select_from(Video)
        .where(Video.state == State.PENDING, Video.next_poll_at <= now)
    ).scalar_one()
    overdue = session.execute(
        select(func.count())
        .select_from(Video)
        .where(
            Video.state == State.PENDING,
            Video.next_poll_at < now - timedelta(seconds=overdue_after),
        )
    ).scalar_one()
    oldest = session.execute(
        select(Video.video_id, Video.enqueued_at)
        .where(Video.state == State.PENDING)
        .order_by(Video.enqueued_at, Video.video_id)
        .limit(1)
    ).one_or_none()
    recent = PollMinute.minute >= now - timedelta(minutes=5)
    hour = session.execute(
        select(
            func.coalesce(func.sum(PollMinute.polls), 0),
            func.coalesce(func.sum(PollMinute.errors), 0),
            func.coalesce(func.sum(PollMinute.rate_limited), 0),
            func.coalesce(func.sum(PollMinute.unauthorized), 0),
            func.coalesce(func.sum(case((recent, PollMinute.polls), else_=0)), 0),
            func.coalesce(func.sum(case((recent, PollMinute.errors), else_=0)), 0),
        ).where(PollMinute.minute >= now - timedelta(hours=1))
    ).one()
    control = session.get(TrackerControl, CONTROL_ROW_ID)
    limiter = limiter_view(control) if control else LimiterView()
    stored = Summary(
        now=now,
        counts=counts,
        due_now=due_now,
        oldest_pending_id=oldest[0] if oldest else None,
        oldest_pending_since=oldest[1] if oldest else None,
        polls_last_hour=int(hour[0]),
        errors_last_hour=int(hour[1]),
        rate_limited_last_hour=int(hour[2]),
        unauthorized_last_hour=int(hour[3]),
        auth_failing=bool(control and control.auth_failing),
        auth_error=control.auth_error if control else None,
        auth_failed_at=control.auth_failed_at if control else None,
        auth_paused_until=control.auth_paused_until if control else None,
        throttled_until=control.throttled_until if control else None,
        rate_factor=limiter.rate_factor,
        last_dispatch_at=control.last_dispatch_at if control else None,
        polls_last_5_minutes=int(hour[4]),
        errors_last_5_minutes=int(hour[5]),
        overdue=int(overdue),
        scheduler_read_at=control.scheduler_read_at if control else None,
        scheduler_ok_at=control.scheduler_ok_at if control else None,
        scheduler_failures=control.scheduler_failures if control else 0,
        scheduler_error=control.scheduler_error if control else None,
        scheduler_executing=control.scheduler_executing if control else None,
    )
    return stored, limiter


def status_filter(status: str) -> Any:
    """``--status`` matches the upstream status name (any case) or its number."""
    text = status.strip()
    if text.lstrip("-").isdigit():
        return Video.status_code == int(text)
    return func.upper(Video.status_name) == text.upper()


def list_query(
    *,
    state: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int | None = 100,
) -> Select[Video]:
    query = select(Video)
    if state:
        query = query.where(Video.state == state)
    if status:
        query = query.where(status_filter(status))
    if since is not None:
        # "finished since": served by the (done_at, video_id) index
        query = query.where(Video.done_at >= since).order_by(Video.done_at, Video.video_id)
    else:
        query = query.order_by(Video.enqueued_at, Video.video_id)
    if limit is not None:
        query = query.limit(limit)
    return query


def list_videos(session: Session, **filters: Any) -> list[Video]:
    return list(session.scalars(list_query(**filters)))


def count_videos(session: Session, **filters: Any) -> int:
    """How many rows ``list_videos`` with these filters would give without a limit."""
    query = list_query(**filters, limit=None).order_by(None)
    return int(session.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def finished_after(
    session: Session,
    *,
    after: tuple[datetime, str] | None,
    settle: float,
    limit: int,
    status_code: int | None = None,
) -> list[Video]:
    """Done rows after the (done_at, video_id) cursor that finished at least ``settle`` s ago.

    Keyset pagination on the (done_at, video_id) index.
    """
    horizon = current_time(session) - timedelta(seconds=settle)
    query = select(Video).where(Video.state == State.DONE, Video.done_at <= horizon)
    if after is not None:
        query = query.where(tuple_(Video.done_at, Video.video_id) > tuple_(*after))
    if status_code is not None:
        query = query.where(Video.status_code == status_code)
    query = query.order_by(Video.done_at, Video.video_id).limit(limit)
    return list(session.scalars(query))


def finished_durations(
    session: Session, limit: int
) -> list[tuple[datetime, datetime, datetime | None]]:
    """(done_at, enqueued_at, started_at) of the newest ``limit`` done rows.

    Read backwards along the (done_at, video_id) index: a bounded read whatever the table's
    size. Failures count too: a FAILED answer is as final as a COMPLETED one.
    """
    rows = session.execute(
        select(Video.done_at, Video.enqueued_at, Video.started_at)
        .where(Video.done_at.is_not(None), Video.state == State.DONE)
        .order_by(Video.done_at.desc())
        .limit(limit)
    ).all()
    return [(done, enqueued, started) for done, enqueued, started in rows if done is not None]


def prune_batch(
    session: Session, older_than: timedelta, batch: int = 10_000
) -> tuple[int, int, int]:
    """Delete one batch of history older than ``older_than``.

    Returns (events, poll minutes, delivered webhooks) removed. Rows in ``videos`` are the
    product and are never pruned, nor are webhooks still owed or failed (an operator may want
    to see those). Batches keep each transaction short; call until all counts are 0.
    """
    cutoff = current_time(session) - older_than
    old_events = (
        select(VideoEvent.id).where(VideoEvent.at < cutoff).order_by(VideoEvent.id).limit(batch)
    )
    events = session.execute(
        delete(VideoEvent)
        .where(VideoEvent.id.in_(old_events.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    minutes = session.execute(
        delete(PollMinute)
        .where(PollMinute.minute < cutoff)
        .execution_options(synchronize_session=False)
    )
    outbox = table_of(WebhookDelivery)
    old_deliveries = (
        select(outbox.c.id).where(outbox.c.delivered_at < cutoff).order_by(outbox.c.id).limit(batch)
    )
    deliveries = session.execute(
        delete(outbox).where(outbox.c.id.in_(old_deliveries.scalar_subquery()))
    )
    return (
        int(events.rowcount),  # type: ignore[attr-defined]
        int(minutes.rowcount),  # type: ignore[attr-defined]
        int(deliveries.rowcount),  # type: ignore[attr-defined]
    )


def get_video(session: Session, video_id: str) -> Video | None:
    return session.get(Video, video_id)


def events_for(session: Session, video_id: str) -> list[VideoEvent]:
    return list(
        session.scalars(
            select(VideoEvent).where(VideoEvent.video_id == video_id).order_by(VideoEvent.id)
        )
    )


def done_event_counts(session: Session) -> dict[str, int]:
    """How many 'done' events each id has (exactly one is the promise)."""
    rows = session.execute(
        select(VideoEvent.video_id, func.count())
        .where(VideoEvent.kind == EventKind.DONE.value)
        .group_by(VideoEvent.video_id)
    )
    return {video_id: count for video_id, count in rows}

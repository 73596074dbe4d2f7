"""SQL of the token-wide scheduler read: which pending ids it listed, which have left it.

The read itself is booked on the global limiter by ``service.limiter.begin_scheduler_read``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from pixverse_tracker.db.control import lock
from pixverse_tracker.db.sql import add_events, chunks, id_in
from pixverse_tracker.models import Video
from pixverse_tracker.rules.events import EventKind
from pixverse_tracker.rules.row import EventSpec
from pixverse_tracker.rules.state import State


def pending_exists(session: Session) -> bool:
    """Whether any id is pending (a scheduler read is worth a request only then)."""
    pending = session.execute(
        select(Video.video_id)
        .where(Video.state == State.PENDING, Video.next_poll_at.is_not(None))
        .order_by(Video.next_poll_at)
        .limit(1)
    ).first()
    return pending is not None


@dataclass(frozen=True)
class SchedulerResult:
    """What one scheduler answer changed: tracked ids it listed, and ids that have left it."""

    now: datetime
    listed: int
    gone: list[str]


def scheduler_answered(
    session: Session,
    video_ids: Sequence[str],
    *,
    complete: bool,
    defer: float,
    refresh: float | None = None,
) -> SchedulerResult:
    """Apply one scheduler answer to the pending rows.

    - A pending id it lists is still executing: the read was a look at it, so its next look
      is moved to ``defer`` (the poll cap) after this read. Rows are rewritten only when first
      listed or when that look is less than ``refresh`` away (default half of ``defer``), not
      on every read: the caller picks ``refresh`` so that a dispatch never claims a listed id
      between two reads (its horizon plus two read intervals).
    - A pending id an earlier read listed and this one does not has just finished or failed:
      due at once (``hinted_at`` too, so that a poll of it already in flight, which may have
      been sent before it finished, is followed by another at once).
    - ``complete`` is False when the answer had items without a usable id: one of those may be
      ours, so nothing is taken as gone from that answer.
    """
    # The control row first, as every other writer takes it before rows (no deadlock).
    control, now = lock(session)
    listed = sorted(set(video_ids))
    soon = now + timedelta(seconds=min(defer, refresh if refresh is not None else defer / 2))
    later = now + timedelta(seconds=defer)
    free = or_(Video.claim_token.is_(None), Video.claimed_until <= now)
    tracked = 0
    for chunk in chunks(listed):
        tracked += int(
            session.execute(
                select(func.count())
                .select_from(Video)
                .where(id_in(session, chunk), Video.state == State.PENDING)
            ).scalar_one()
        )
        session.execute(
            update(Video)
            .where(
                id_in(session, chunk),
                Video.state == State.PENDING,
                or_(Video.scheduler_seen_at.is_(None), and_(free, Video.next_poll_at < soon)),
            )
            .values(
                scheduler_seen_at=func.coalesce(Video.scheduler_seen_at, now),
                next_poll_at=case(
                    (and_(free, Video.next_poll_at < later), later),
                    else_=Video.next_poll_at,
                ),
            )
            .execution_options(synchronize_session=False)
        )
    gone: list[str] = []
    if complete:
        seen = session.execute(
            select(Video.video_id).where(
                Video.state == State.PENDING, Video.scheduler_seen_at.is_not(None)
            )
        ).scalars()
        present = set(listed)
        gone = sorted(v for v in seen if v not in present)
    for chunk in chunks(gone):
        session.execute(
            update(Video)
            .where(id_in(session, chunk), Video.state == State.PENDING)
            .values(
                scheduler_seen_at=None,
                hinted_at=now,
                next_poll_at=case((free, now), else_=Video.next_poll_at),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    left = EventSpec(EventKind.UNSCHEDULED, "left the upstream's scheduler: finished or failed")
    add_events(session, now, [(v, left) for v in gone])
    control.scheduler_ok_at = now
    control.scheduler_failures = 0
    control.scheduler_error = None
    control.scheduler_executing = tracked
    return SchedulerResult(now, tracked, gone)


def scheduler_failed(session: Session, reason: str) -> int:
    """Note a failed scheduler read (reads back off); returns the failures in a row."""
    control, _ = lock(session)
    control.scheduler_failures += 1
    control.scheduler_error = reason[:500]
    return control.scheduler_failures

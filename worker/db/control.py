"""SQL on the one ``tracker_control`` row (the global limiter and pause flags) and the
per-minute poll counters.

The service layer locks the row, asks the rules (``rules.limiter``) what to change, and writes
the changes back here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pixverse_tracker.db.sql import current_time, insert_for, table_of
from pixverse_tracker.models import CONTROL_ROW_ID, PollMinute, TrackerControl
from pixverse_tracker.rules.limiter import LimiterView
from pixverse_tracker.rules.outcomes import PollCounts


def lock(session: Session) -> tuple[TrackerControl, datetime]:
    control = session.execute(
        select(TrackerControl).where(TrackerControl.id == CONTROL_ROW_ID).with_for_update()
    ).scalar_one_or_none()
    if control is None:  # a database migrated by hand without the seed row
        session.add(TrackerControl(id=CONTROL_ROW_ID, rate_factor=1.0, auth_failing=False))
        session.flush()
        return lock(session)
    # read the clock only now that the lock is ours: waiting for it must not age the claim
    return control, current_time(session)


def limiter_view(control: TrackerControl) -> LimiterView:
    return LimiterView(
        next_slot_at=control.next_slot_at,
        rate_factor=control.rate_factor,
        rate_factor_at=control.rate_factor_at,
        throttled_until=control.throttled_until,
        auth_paused_until=control.auth_paused_until,
        auth_failing=control.auth_failing,
    )


def update_control(control: TrackerControl, **changes: Any) -> None:
    """Write ``changes`` (column names and values) onto the locked control row."""
    for key, value in changes.items():
        setattr(control, key, value)


def note_auth_ok(session: Session) -> None:
    session.execute(
        update(TrackerControl)
        .where(TrackerControl.id == CONTROL_ROW_ID, TrackerControl.auth_failing.is_(True))
        .values(auth_failing=False, auth_paused_until=None, auth_error=None)
    )


def add_poll_counts(session: Session, counts: PollCounts) -> None:
    """One upsert per batch into the current minute's counters."""
    if counts.polls == 0:
        return
    minute = current_time(session).replace(second=0, microsecond=0)
    values = {
        "minute": minute,
        "polls": counts.polls,
        "errors": counts.errors,
        "rate_limited": counts.rate_limited,
        "unauthorized": counts.unauthorized,
    }
    stmt = insert_for(session)(table_of(PollMinute)).values(values)
    table = table_of(PollMinute)
    stmt = stmt.on_conflict_do_update(
        index_elements=["minute"],
        set_={
            name: table.c[name] + stmt.excluded[name]
            for name in ("polls", "errors", "rate_limited", "unauthorized")
        },
    )
    session.execute(stmt)

"""Bookings on the global limiter: extra request slots, the scheduler read's slot, and what a
401 or a 429 does to every worker. Each locks the control row, asks ``rules.limiter``, and
writes the answer back (``db.control``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from pixverse_tracker.db.control import limiter_view, lock, update_control
from pixverse_tracker.db.scheduler import pending_exists
from pixverse_tracker.rules.limiter import after_rate_limited, after_unauthorized, plan_extra_slots
from pixverse_tracker.rules.policy import Policy

# From booking a slot to a worker ready to send on it: the booking's commit (with the leases of
# its ids), the broker's hop and the batch's own read. A slot sooner than that would be missed
# by construction, and a missed slot is booked again (pacing.late_tolerance).
SLOT_LEAD = 0.2


def reserve_slots(
    session: Session, count: int, rate_limit: float, policy: Policy
) -> tuple[datetime, list[datetime]]:
    """``count`` more request slots from the global limiter (database time), or none while
    polling is paused or throttled. Returns (now, slots)."""
    control, now = lock(session)
    plan = plan_extra_slots(limiter_view(control), now, rate_limit, count, policy, SLOT_LEAD)
    if plan.count == 0:
        return now, []
    update_control(control, next_slot_at=plan.slot(plan.count))
    return now, [plan.slot(i) for i in range(plan.count)]


@dataclass(frozen=True)
class SchedulerStart:
    """Whether a scheduler read may go out now, and at which slot of the global limiter."""

    now: datetime
    slot: datetime | None  # None: no read this time, for ``reason``
    reason: str | None = None


# After this many failed reads in a row the reads are this far apart at most: the endpoint
# is worth trying again now and then, but not every few seconds while it is broken.
SCHEDULER_MAX_BACKOFF = 300.0


def begin_scheduler_read(
    session: Session, *, rate_limit: float, interval: float, policy: Policy
) -> SchedulerStart:
    """Book the next scheduler read, if one is due: at most one per ``interval`` across every
    beat and worker (the control row's lock), only while some id is pending, later after
    failures, and on a slot of the same global limiter as every other request."""
    control, now = lock(session)
    last = control.scheduler_read_at
    wait = interval * 2.0 ** min(control.scheduler_failures, 16)
    if last is not None and now < last + timedelta(seconds=min(wait, SCHEDULER_MAX_BACKOFF)) - (
        timedelta(seconds=0.25 * interval)  # a beat tick that comes a little early still reads
    ):
        return SchedulerStart(now, None, "not due" if not control.scheduler_failures else "backoff")
    if not pending_exists(session):
        return SchedulerStart(now, None, "nothing pending")
    plan = plan_extra_slots(limiter_view(control), now, rate_limit, 1, policy, SLOT_LEAD)
    if plan.count == 0:
        return SchedulerStart(now, None, plan.reason)
    update_control(control, next_slot_at=plan.slot(1), scheduler_read_at=now)
    return SchedulerStart(now, plan.first)


def note_unauthorized(session: Session, message: str, policy: Policy) -> datetime:
    """A 401 (or 403): every worker pauses; returns the end of the pause."""
    control, now = lock(session)
    update_control(control, **after_unauthorized(limiter_view(control), message, now, policy))
    return control.auth_paused_until or now


def note_rate_limited(session: Session, retry_after: float | None, policy: Policy) -> datetime:
    """A 429: the global rate halves (once per throttle) and dispatch pauses; returns its end."""
    control, now = lock(session)
    update_control(control, **after_rate_limited(limiter_view(control), retry_after, now, policy))
    return control.throttled_until or now

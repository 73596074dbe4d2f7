"""The token-wide scheduler read: one request that says which jobs are still executing, for
every account of the token at once (``GET /v2/pixverse/scheduler/``).

Beat asks for it every ``TRACKER_SCHEDULER_INTERVAL`` seconds; ``begin_scheduler_read``
lets at most one read go out per interval across all beats and workers, on a slot of the
global limiter. What an answer means (upstream.md):

- a pending id it lists is still executing: the read is a look at it, and no other request
  needs to ask about it until the cap has passed (``scheduler_answered`` moves its next
  look there, and every later read moves it again);
- a pending id an earlier read listed and this one does not has just finished or failed: it is
  due at once, and this module dispatches at once so it is fetched within a slot or two;
- an id never listed (made on the website, or finished before the first read) is tracked by
  the list and by-id schedule alone, under the same cap.

Any failure (401, 429, 5xx, a timeout, a garbage answer, an endpoint that does not exist)
leaves the rows alone: the moves already made expire within the cap, and the ids fall back to
the list and by-id schedule. 401 and 429 pause or slow everything, as from any endpoint.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from pixverse_tracker.db.control import add_poll_counts
from pixverse_tracker.db.engines import describe_error
from pixverse_tracker.db.scheduler import scheduler_answered, scheduler_failed
from pixverse_tracker.logs import event
from pixverse_tracker.rules.outcomes import (
    Executing,
    PollCounts,
    RateLimited,
    Rejected,
    SchedulerOutcome,
    Transient,
    Unauthorized,
    kind_of,
)
from pixverse_tracker.service.dispatch import Batch, dispatch
from pixverse_tracker.service.limiter import (
    begin_scheduler_read,
    note_rate_limited,
    note_unauthorized,
    reserve_slots,
)
from pixverse_tracker.service.metrics import record_request
from pixverse_tracker.service.pacing import PACER, late_tolerance
from pixverse_tracker.service.runtime import Runtime

log = logging.getLogger("tracker.scheduler")


def read(rt: Runtime) -> list[Batch]:
    """Read the scheduler if a read is due, apply the answer, and return the poll batches of a
    dispatch when ids have left it (the caller sends them, as after ``dispatch``)."""
    s = rt.settings
    if not s.scheduler_enabled:
        return []
    with rt.sessions.begin() as session:
        start = begin_scheduler_read(
            session, rate_limit=s.rate_limit, interval=s.scheduler_interval, policy=rt.policy
        )
    if start.slot is None:
        if start.reason not in (None, "not due", "nothing pending"):
            event(log, logging.DEBUG, "scheduler_skipped", reason=start.reason)
        return []
    # The slot is in database time; our monotonic clock measures the wait (skew-proof).
    spacing = 1.0 / s.rate_limit
    if not _wait_for_slot((start.slot - start.now).total_seconds(), spacing):
        # Missed it (this process is busy): one more slot, or no read this interval, rather
        # than a read fired on another request's slot.
        with rt.sessions.begin() as session:
            now, slots = reserve_slots(session, 1, s.rate_limit, rt.policy)
        if not slots or not _wait_for_slot((slots[0] - now).total_seconds(), spacing):
            event(log, logging.DEBUG, "scheduler_skipped", reason="missed its slot")
            return []

    outcome = rt.client.scheduler()
    record_request("scheduler", kind_of(outcome), outcome.latency)
    counts = PollCounts()
    counts.add(outcome)
    try:
        with rt.sessions.begin() as session:
            add_poll_counts(session, counts)
            if isinstance(outcome, Executing):
                result = scheduler_answered(
                    session,
                    outcome.ids,
                    complete=outcome.dropped == 0,
                    defer=rt.policy.poll_interval_max,
                    # a listed id must never come due for a dispatch between two reads
                    refresh=s.dispatch_interval + 2 * s.scheduler_interval,
                )
            else:
                failures = scheduler_failed(session, _reason(outcome))
                if isinstance(outcome, Unauthorized):
                    note_unauthorized(session, outcome.message, rt.policy)
                elif isinstance(outcome, RateLimited):
                    note_rate_limited(session, outcome.retry_after, rt.policy)
    except SQLAlchemyError as exc:
        event(log, logging.WARNING, "scheduler_not_stored", error=describe_error(exc))
        return []

    if not isinstance(outcome, Executing):
        event(
            log,
            logging.WARNING,
            "scheduler_failed",
            outcome=kind_of(outcome),
            http_status=outcome.http_status,
            reason=_reason(outcome),
            failures=failures,
            latency=outcome.latency,
        )
        return []
    event(
        log,
        logging.INFO,
        "scheduler",
        executing=len(outcome.ids),
        tracked=result.listed,
        finished=len(result.gone),
        dropped=outcome.dropped,
        latency=outcome.latency,
    )
    # Ids that just finished are due now: claim and send them at once rather than at the
    # next dispatch tick.
    return dispatch(rt) if result.gone else []


def _wait_for_slot(wait: float, spacing: float) -> bool:
    """Sleep until a slot ``wait`` seconds away; False when it cannot start on time there."""
    slot_at = time.monotonic() + max(0.0, wait)
    tolerance = late_tolerance(spacing)
    # Sleep first and reserve at the slot, as a batch does: a reservation made seconds ahead
    # would hold this process's pacer past every earlier slot of its batches, and they would
    # all miss theirs.
    time.sleep(max(0.0, slot_at - time.monotonic()))
    at = PACER.reserve(slot_at, spacing, latest=slot_at + tolerance)
    if at is None:
        return False
    time.sleep(max(0.0, at - time.monotonic()))
    return time.monotonic() - slot_at <= tolerance


def _reason(outcome: SchedulerOutcome) -> str:
    if isinstance(outcome, Rejected | Unauthorized):
        return outcome.message or kind_of(outcome)
    if isinstance(outcome, RateLimited):
        return "rate limited"
    if isinstance(outcome, Transient):
        return outcome.reason or kind_of(outcome)
    return "unexpected answer"

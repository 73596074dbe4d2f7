"""The decision: what one upstream answer means for a tracked row (its state, columns, events).

No I/O here. The service layer feeds ``decide`` a snapshot of the row and the database's clock,
and the SQL layer writes back whatever ``Decision`` it returns.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pixverse_tracker.rules import schedule
from pixverse_tracker.rules.events import EventKind
from pixverse_tracker.rules.outcomes import (
    Deleted,
    Listed,
    NotYet,
    Outcome,
    RateLimited,
    Record,
    Rejected,
    Transient,
    Unauthorized,
)
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.rules.row import Decision, EventSpec, RowChanges, RowView
from pixverse_tracker.rules.state import State
from pixverse_tracker.rules.timing import deadline_of, next_poll, progress_of, started_since
from pixverse_tracker.rules.verdict import (
    Verdict,
    clean_json,
    judge,
    record_digest,
    short,
    status_of,
    typed_columns,
)

# Past the give-up deadline, answers that tell us nothing (5xx, timeouts) are retried this much
# longer, so an upstream outage at the wrong moment does not expire videos that may be done.
ERROR_GRACE = timedelta(hours=1)


def _finished(state: State, now: datetime, changes: RowChanges) -> RowChanges:
    return replace(changes, next_poll_at=None, done_at=now if state is State.DONE else None)


def decide(
    row: RowView,
    outcome: Outcome,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    sent_at: datetime | None = None,
    *,
    knowledge: schedule.Knowledge | None = None,
    grid: schedule.Grid | None = None,
    list_seen: bool | None = None,
    list_offset: int | None = None,
    share: int = 1,
) -> Decision:
    """Turn one upstream answer into the row's next state.

    ``now`` is the database's clock when the answer arrived; ``sent_at`` when the request went
    out (default: ``now``). Give-up is judged by ``sent_at``: only a poll *sent* at or past
    the deadline may expire a row. ``knowledge``, ``grid`` and ``share`` feed the next poll
    time (see ``next_poll``); ``list_seen`` says whether a list read showed the id (True),
    missed it (False: it is fetched by id for a while) or was not involved (None);
    ``list_offset`` is the offset of the page that showed it, where its next list read starts.
    """
    sent = sent_at or now
    base = RowChanges(updated_at=now, claimed_until=None, claim_token=None)
    if list_seen is False:
        # not where we looked: the next list read (after the retry period) starts at the top
        base = replace(base, list_missed_at=now, list_offset=None)
    elif list_seen is True:
        if row.list_missed_at is not None:
            base = replace(base, list_missed_at=None)
        if list_offset is not None and list_offset != row.list_offset:
            base = replace(base, list_offset=list_offset)

    # Answers about the account, not the video: no penalty, no poll counted.
    if isinstance(outcome, Unauthorized):
        until = now + timedelta(seconds=policy.auth_pause)
        return Decision(
            State.PENDING,
            replace(base, next_poll_at=until, last_http_status=outcome.http_status),
            pause="auth",
        )
    if isinstance(outcome, RateLimited):
        wait = outcome.retry_after if outcome.retry_after is not None else policy.rate_limit_pause
        until = now + timedelta(seconds=max(wait, policy.poll_interval_min))
        return Decision(
            State.PENDING,
            replace(base, next_poll_at=until, last_http_status=outcome.http_status),
            pause="rate",
            retry_after=outcome.retry_after,
        )

    polled = replace(base, last_polled_at=now, last_http_status=outcome.http_status)
    deadline = deadline_of(row, policy)

    if isinstance(outcome, Transient):
        changes = replace(polled, error_count=row.error_count + 1, last_error=short(outcome.reason))
        event = EventSpec(EventKind.ERROR, short(outcome.reason), outcome.http_status)
        if sent >= deadline + ERROR_GRACE:
            reason = f"expired: no usable answer after the deadline (last: {short(outcome.reason)})"
            changes = replace(changes, abandon_reason=reason)
            return Decision(
                State.ABANDONED,
                _finished(State.ABANDONED, now, changes),
                (event, EventSpec(EventKind.ABANDONED, reason, outcome.http_status)),
            )
        attempt = row.poll_count + row.error_count + 1
        due = next_poll(row, now, policy, rng, attempt, sent, grid=grid)
        if sent >= deadline:
            # keep retrying past the deadline only within the grace period
            due = min(due, deadline + ERROR_GRACE)
        return Decision(State.PENDING, replace(changes, next_poll_at=due), (event,))

    polled = replace(polled, poll_count=row.poll_count + 1, last_error=None)

    if isinstance(outcome, Deleted | Rejected):
        label = "deleted" if isinstance(outcome, Deleted) else "rejected"
        reason = f"{label}: {short(outcome.message) or 'no message'}"
        return Decision(
            State.ABANDONED,
            _finished(State.ABANDONED, now, replace(polled, abandon_reason=reason)),
            (EventSpec(EventKind.ABANDONED, reason, outcome.http_status),),
        )

    events: list[EventSpec] = []
    anomaly: str | None = None
    status_code = row.status_code  # what the schedule goes by: the latest status we know
    entry: dict[str, Any] | None = None
    if isinstance(outcome, Listed):
        # Still in progress, says the list: its status columns follow (with an event when the
        # status changes), the record does not (the entry is not the record we keep).
        entry = clean_json(outcome.entry)
        code, name, final = status_of(entry)
        if code is not None and code != row.status_code:
            polled = replace(polled, status_code=code, status_name=name, status_final=final)
            events.append(EventSpec(EventKind.STATUS, None, outcome.http_status, code, name))
        status_code = code if code is not None else status_code
    elif isinstance(outcome, Record):
        record = clean_json(outcome.record)
        columns = typed_columns(record)
        digest = record_digest(record)
        if digest != row.record_sha:
            # Only a changed record is written: an identical answer costs one small UPDATE.
            polled = replace(polled, **columns, record=record, record_sha=digest)
        if not row.has_record or columns["status_code"] != row.status_code:
            events.append(
                EventSpec(
                    EventKind.STATUS,
                    None,
                    outcome.http_status,
                    columns["status_code"],
                    columns["status_name"],
                )
            )
        status_code = columns["status_code"]
        entry = record
        verdict, anomaly = judge(record)
        if verdict in (Verdict.SUCCESS, Verdict.FAILURE):
            events.append(
                EventSpec(
                    EventKind.DONE,
                    None,
                    outcome.http_status,
                    columns["status_code"],
                    columns["status_name"],
                )
            )
            return Decision(
                State.DONE, _finished(State.DONE, now, polled), tuple(events), notify_done=True
            )
        if anomaly is not None and events:
            # once per status change, not once per poll: the log has every occurrence
            events.append(
                EventSpec(EventKind.ANOMALY, anomaly, outcome.http_status, columns["status_code"])
            )
    else:
        assert isinstance(outcome, NotYet)

    if sent >= deadline:
        reason = f"expired: not finished {policy.give_up_after:g}s after enqueue"
        events.append(EventSpec(EventKind.ABANDONED, reason, outcome.http_status))
        expired = _finished(State.ABANDONED, now, replace(polled, abandon_reason=reason))
        return Decision(State.ABANDONED, expired, tuple(events), anomaly=anomaly)
    if row.started_at is None and schedule.stage_of(status_code) is schedule.Stage.GENERATING:
        polled = replace(polled, started_at=started_since(row))
    due = next_poll(
        row,
        now,
        policy,
        rng,
        row.poll_count + 1,
        sent,
        progress=progress_of(row, now, status_code, entry),
        knowledge=knowledge,
        grid=grid,
        share=share,
    )
    return Decision(
        State.PENDING, replace(polled, next_poll_at=due), tuple(events), anomaly=anomaly
    )


def not_applied(
    row: RowView,
    reason: str,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    sent_at: datetime | None = None,
    http_status: int | None = None,
) -> Decision:
    """An answer that could not be applied (an error of ours, or a value nothing could store).

    Counted like an upstream error: ``error_count`` + 1, an ``error`` event, the next poll
    after the usual backoff (never at once: the same answer would likely fail the same way).
    A poll sent at or past the deadline expires the row, without the grace an upstream outage
    gets (``ERROR_GRACE``): the upstream did answer, and waiting longer would not change ours.
    """
    sent = sent_at or now
    message = short(f"answer not applied: {reason}")
    changes = RowChanges(
        updated_at=now,
        claimed_until=None,
        claim_token=None,
        last_polled_at=now,
        last_http_status=http_status,
        error_count=row.error_count + 1,
        last_error=message,
    )
    event = EventSpec(EventKind.ERROR, message, http_status)
    if sent >= deadline_of(row, policy):
        why = short(f"expired: no answer could be applied by the deadline (last: {message})")
        return Decision(
            State.ABANDONED,
            _finished(State.ABANDONED, now, replace(changes, abandon_reason=why)),
            (event, EventSpec(EventKind.ABANDONED, why, http_status)),
        )
    attempt = row.poll_count + row.error_count + 1
    due = next_poll(row, now, policy, rng, attempt, sent)
    return Decision(State.PENDING, replace(changes, next_poll_at=due), (event,))

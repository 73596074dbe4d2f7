"""Applying a batch's answers: each decided by the rules and written in one transaction; an
answer that cannot be applied (the rules or the database raise) costs only its own id an
error and a backoff, with one log line."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from pixverse_tracker.db.engines import describe_error, is_unavailable
from pixverse_tracker.logs import event
from pixverse_tracker.rules import listing, schedule
from pixverse_tracker.rules.decide import decide, not_applied
from pixverse_tracker.rules.outcomes import Outcome
from pixverse_tracker.rules.row import Decision, RowView, value_or_none
from pixverse_tracker.rules.state import State
from pixverse_tracker.service import metrics
from pixverse_tracker.service.apply import apply
from pixverse_tracker.service.batch_state import BatchState

log = logging.getLogger("tracker.poll")
_rng = random.SystemRandom()


def apply_answers(
    run: BatchState,
    answers: Sequence[tuple[str, Outcome, bool | None]],
    sent_at: datetime,
    share: int = 1,
    list_offset: int | None = None,
) -> None:
    """Write the answers, in one transaction (one list page answers for many ids; then
    ``list_offset`` is that page's, where the next list read of those ids starts).

    An answer that cannot be applied (the rules or the database raise) costs its id an
    error and a backoff (``decide.not_applied``) and one log line; the others go on.
    Only a database that is unavailable raises (SQLAlchemyError: ``store_failed``).
    """
    decisions = []
    for video_id, outcome, list_seen in answers:
        row = run.rows[video_id]
        try:
            decision = decide(
                row,
                outcome,
                run.db_now(),
                run.rt.policy,
                _rng,
                sent_at,
                knowledge=run.knowledge,
                grid=_grid(run, row, list_seen),
                list_seen=list_seen,
                list_offset=list_offset,
                share=share,
            )
        except Exception as exc:  # noqa: BLE001 - an answer the rules did not foresee
            decision = _not_applied(run, video_id, exc, sent_at, outcome.http_status)
        decisions.append((video_id, decision, row.webhook_url or run.rt.settings.webhook_url))
    try:
        applied = _write(run, decisions, sent_at)
    except Exception as exc:
        if isinstance(exc, SQLAlchemyError) and is_unavailable(exc):
            raise
        # Something in these answers was refused: each on its own, so only its id pays.
        applied = [_write_alone(run, item, sent_at) for item in decisions]
    with run.lock:
        for (video_id, _, _), ok in zip(decisions, applied, strict=True):
            run.unanswered.discard(video_id)
            if ok:
                run.report.applied += 1
            else:
                run.report.stale += 1
    for (video_id, decision, _), ok in zip(decisions, applied, strict=True):
        _log_decision(video_id, decision, ok)


def _grid(run: BatchState, row: RowView, list_seen: bool | None) -> schedule.Grid | None:
    if list_seen is False:
        return None
    missed = None if list_seen else row.list_missed_at
    return listing.grid_for(row.video_id, missed, run.db_now(), run.rt.policy)


def _write(
    run: BatchState, decisions: Sequence[tuple[str, Decision, str | None]], sent_at: datetime
) -> list[bool]:
    with run.rt.sessions.begin() as session:
        return [apply(session, v, run.batch.token, d, url, sent_at) for v, d, url in decisions]


def _write_alone(
    run: BatchState, item: tuple[str, Decision, str | None], sent_at: datetime
) -> bool:
    video_id, decision, url = item
    try:
        return _write(run, [item], sent_at)[0]
    except Exception as exc:
        if isinstance(exc, SQLAlchemyError) and is_unavailable(exc):
            raise
        http_status = value_or_none(decision.changes.last_http_status)
        failed = _not_applied(run, video_id, exc, sent_at, http_status)
    return _write(run, [(video_id, failed, url)], sent_at)[0]


def _not_applied(
    run: BatchState, video_id: str, exc: BaseException, sent_at: datetime, http_status: int | None
) -> Decision:
    """The decision for an answer that raised: one log line, never a traceback per poll
    (it is at DEBUG, for whoever hunts the bug), and an error with backoff for the row."""
    reason = describe(exc)
    event(log, logging.ERROR, "answer_not_applied", video_id=video_id, error=reason)
    log.debug("answer_not_applied traceback", exc_info=exc)
    return not_applied(
        run.rows[video_id], reason, run.db_now(), run.rt.policy, _rng, sent_at, http_status
    )


def job_failed(run: BatchState, video_ids: Sequence[str], exc: BaseException) -> None:
    """A job that raised before its answers were applied: those still unanswered take an
    error and a backoff, as ``apply_answers`` gives one answer that raised (not a free retry)."""
    with run.lock:
        held = [v for v in video_ids if v in run.unanswered]
    sent_at = run.db_now()
    webhook_url = run.rt.settings.webhook_url
    try:
        decisions = [
            (
                v,
                _not_applied(run, v, exc, sent_at, None),
                run.rows[v].webhook_url or webhook_url,
            )
            for v in held
        ]
        applied = _write(run, decisions, sent_at)
    except Exception as failure:  # noqa: BLE001 - the last resort: their leases recover them
        store_failed(run, held, failure)
        return
    with run.lock:
        run.unanswered.difference_update(held)
        run.report.applied += sum(applied)
        run.report.stale += len(applied) - sum(applied)


def store_failed(run: BatchState, video_ids: Sequence[str], exc: Exception) -> None:
    # The answers are lost but not the ids: they keep their claim until the lease runs
    # out and are polled again then.
    with run.lock:
        run.report.failed_to_store += len(video_ids)
        run.unanswered.difference_update(video_ids)
    for video_id in video_ids:
        event(log, logging.ERROR, "store_failed", video_id=video_id, error=describe_error(exc))


def _log_decision(video_id: str, decision: Decision, applied: bool) -> None:
    if not applied:
        event(log, logging.WARNING, "stale_answer_dropped", video_id=video_id)
    if decision.anomaly:
        event(log, logging.WARNING, "anomaly", video_id=video_id, detail=decision.anomaly)
    if decision.state is not State.PENDING and applied:
        metrics.record_finished(decision.state.value)
        event(
            log,
            logging.INFO,
            decision.state.value,
            video_id=video_id,
            reason=value_or_none(decision.changes.abandon_reason)
            or value_or_none(decision.changes.status_name),
        )


def describe(exc: BaseException) -> str:
    """One line about an exception: its type and the first line of its message, bounded."""
    text = describe_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."

"""What the adaptive schedule knows: how long the newest finished videos took, from our table."""

from __future__ import annotations

from sqlalchemy.orm import Session

from pixverse_tracker.db.reports import finished_durations
from pixverse_tracker.rules import schedule


def knowledge(
    session: Session,
    limit: int = schedule.SAMPLE_ROWS,
    prior: schedule.Durations = schedule.PRIOR_COMPLETION,
) -> schedule.Knowledge:
    """The completion and generation times of the newest ``limit`` done rows (a bounded read
    whatever the table's size), with ``prior`` standing in until enough are known."""
    finished = finished_durations(session, limit)
    return schedule.Knowledge(
        completion=schedule.Durations.of((d - e).total_seconds() for d, e, _ in finished),
        generation=schedule.Durations.of(
            (d - s).total_seconds() for d, _, s in finished if s is not None
        ),
        prior=prior,
    )

"""What the adaptive schedule reads from our own table (knowledge), against real Postgres."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.rules import schedule
from pixverse_tracker.service.enqueue import enqueue
from pixverse_tracker.service.knowledge import knowledge
from tests.policies import policy_with


def vid(n: int) -> str:
    return f"user:1-pixverse:me@example.com-video:{n}"


def finish(pg: sessionmaker[Session], n: int, state: str, took: float, generated: float | None):
    """Mark id ``n`` final ``took`` seconds after its enqueue, generating for ``generated``."""
    with pg.begin() as session:
        session.execute(
            text(
                "UPDATE videos SET state = :state, next_poll_at = NULL,"
                " done_at = enqueued_at + make_interval(secs => :took),"
                " started_at = CASE WHEN CAST(:gen AS float) IS NULL THEN NULL"
                "   ELSE enqueued_at + make_interval(secs => :took - CAST(:gen AS float)) END,"
                " abandon_reason = CASE WHEN :state = 'abandoned' THEN 'expired' END"
                " WHERE video_id = :id"
            ),
            {"state": state, "took": took, "gen": generated, "id": vid(n)},
        )


def test_completion_and_generation_times_come_from_finished_rows_only(
    pg: sessionmaker[Session],
) -> None:
    with pg.begin() as session:
        enqueue(session, [vid(n) for n in range(6)], policy_with())
    finish(pg, 0, "done", 30.0, 20.0)
    finish(pg, 1, "done", 90.0, 60.0)
    finish(pg, 2, "done", 45.0, None)  # never seen GENERATING: a completion time only
    finish(pg, 3, "abandoned", 600.0, None)  # gave up: says nothing about how long videos take
    # 4 and 5 stay pending
    with pg() as session:
        known = knowledge(session)
    assert known.completion.values == (30.0, 45.0, 90.0)
    assert known.generation.values == (20.0, 60.0)
    assert known.prior is schedule.PRIOR_COMPLETION


def test_only_the_newest_finished_rows_are_read_and_the_prior_is_the_callers(
    pg: sessionmaker[Session],
) -> None:
    with pg.begin() as session:
        enqueue(session, [vid(n) for n in range(5)], policy_with())
    for n in range(5):
        finish(pg, n, "done", 10.0 * (n + 1), None)  # the later finished, the newer
    slow = schedule.prior_for(600.0)
    with pg() as session:
        known = knowledge(session, limit=2, prior=slow)
    assert known.completion.values == (40.0, 50.0)
    assert known.prior is slow

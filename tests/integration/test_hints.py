"""A push (hint) that arrives while the row is being polled is not lost."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.db.claim import owned_rows
from pixverse_tracker.db.sql import current_time
from pixverse_tracker.db.videos import mark_due
from pixverse_tracker.rules.decide import decide
from pixverse_tracker.rules.outcomes import NotYet
from pixverse_tracker.rules.row import RowView
from pixverse_tracker.service.apply import apply
from pixverse_tracker.service.claim import claim_due
from pixverse_tracker.service.enqueue import enqueue
from tests.policies import policy_with

VID = "user:3-pixverse:hint@example.com-video:1"
POLICY = policy_with(first_poll_delay=0, poll_interval_min=30, poll_interval_max=60)


def _claimed(pg: sessionmaker[Session]) -> tuple[str, RowView]:
    with pg.begin() as session:
        enqueue(session, [VID], POLICY)
    with pg.begin() as session:
        claim = claim_due(session, rate_limit=10, horizon=1, lease=60, policy=POLICY)
    assert claim.token is not None
    with pg.begin() as session:
        _, rows, _ = owned_rows(session, claim.token, [VID], 0)
    return claim.token, rows[VID]


def _next_poll_in(pg: sessionmaker[Session]) -> float:
    with pg.begin() as session:
        return float(
            session.execute(
                text("SELECT extract(epoch FROM next_poll_at - now()) FROM videos")
            ).scalar_one()
        )


def test_a_hint_during_a_poll_makes_a_not_yet_answer_poll_again_at_once(
    pg: sessionmaker[Session],
) -> None:
    token, row = _claimed(pg)
    with pg.begin() as session:
        sent_at = current_time(session) - timedelta(seconds=1)  # the request went out
        assert mark_due(session, VID) is False  # claimed: not moved, but remembered
    with pg.begin() as session:
        now = current_time(session)
        decision = decide(row, NotYet(), now, POLICY, random.Random(1), sent_at)
        assert apply(session, VID, token, decision, sent_at=sent_at)
    assert _next_poll_in(pg) <= 0.5, "the answer predates the push: poll again now"


def test_without_a_hint_a_not_yet_answer_backs_off_as_usual(pg: sessionmaker[Session]) -> None:
    token, row = _claimed(pg)
    with pg.begin() as session:
        sent_at = current_time(session)
        decision = decide(row, NotYet(), sent_at, POLICY, random.Random(1), sent_at)
        assert apply(session, VID, token, decision, sent_at=sent_at)
    assert _next_poll_in(pg) >= 20


def test_a_hint_older_than_the_request_does_not_shortcut_the_backoff(
    pg: sessionmaker[Session],
) -> None:
    token, row = _claimed(pg)
    with pg.begin() as session:
        mark_due(session, VID)  # hint first ...
    with pg.begin() as session:
        sent_at = current_time(session) + timedelta(seconds=1)  # ... request after it
        decision = decide(row, NotYet(), sent_at, POLICY, random.Random(1), sent_at)
        assert apply(session, VID, token, decision, sent_at=sent_at)
    assert _next_poll_in(pg) >= 20

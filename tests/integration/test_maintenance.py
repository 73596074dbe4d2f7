"""prune (history goes, videos stay) and health (database, broker, upstream auth)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker import api
from pixverse_tracker.service import maintenance
from pixverse_tracker.service.dispatch import dispatch
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import load
from tests.conftest import REDIS_URL


@pytest.fixture
def rt(pg: sessionmaker[Session], pg_database: str) -> Iterator[Runtime]:
    runtime = Runtime(load({"DATABASE_URL": pg_database, "CELERY_BROKER_URL": REDIS_URL}))
    yield runtime
    runtime.close()


def _count(rt: Runtime, sql: str) -> int:
    with rt.sessions.begin() as session:
        return int(session.execute(text(sql)).scalar_one())


def test_prune_removes_old_history_but_never_videos(rt: Runtime) -> None:
    ids = [f"user:1-pixverse:p@example.com-video:{n}" for n in range(3)]
    api.enqueue(ids, rt=rt)
    with rt.sessions.begin() as session:
        session.execute(
            text("UPDATE video_events SET at = now() - interval '40 days' WHERE video_id <> :keep"),
            {"keep": ids[0]},
        )
        session.execute(
            text(
                "INSERT INTO poll_minutes (minute, polls, errors, rate_limited, unauthorized) "
                "VALUES (date_trunc('minute', now() - interval '40 days'), 5, 0, 0, 0), "
                "(date_trunc('minute', now()), 7, 0, 0, 0)"
            )
        )
    with rt.sessions.begin() as session:
        session.execute(
            text(
                "INSERT INTO webhook_outbox (video_id, url, kind, body, idempotency_key, "
                "created_at, attempts, delivered_at, failed_at) VALUES "
                "(:v, 'http://a/b', 'done', '{}', 'k1', now(), 1, now() - interval '40 days', NULL),"
                "(:v, 'http://a/b', 'done', '{}', 'k2', now(), 1, now(), NULL),"
                "(:v, 'http://a/b', 'done', '{}', 'k3', now(), 9, NULL, now() - interval '40 days')"
            ),
            {"v": ids[1]},
        )
    removed = maintenance.prune(rt)  # default retention: 30 days
    assert removed == (2, 1, 1)  # only the old *delivered* webhook goes
    assert _count(rt, "SELECT count(*) FROM videos") == 3
    assert _count(rt, "SELECT count(*) FROM video_events") == 1
    assert _count(rt, "SELECT sum(polls) FROM poll_minutes") == 7
    assert maintenance.prune(rt) == (0, 0, 0)
    assert _count(rt, "SELECT count(*) FROM webhook_outbox") == 2


def test_health_is_ok_when_database_broker_and_token_are_fine(rt: Runtime) -> None:
    checks = {c.name: c for c in maintenance.health(rt)}
    assert set(checks) == {"database", "upstream_auth", "broker", "dispatch"}
    assert all(c.ok for c in checks.values()), checks


def test_health_fails_on_a_rejected_token_and_an_unreachable_broker(
    pg: sessionmaker[Session], pg_database: str
) -> None:
    runtime = Runtime(
        load({"DATABASE_URL": pg_database, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    )
    try:
        with runtime.sessions.begin() as session:
            session.execute(
                text("UPDATE tracker_control SET auth_failing = true, auth_error = 'Unauthorized'")
            )
        checks = {c.name: c for c in maintenance.health(runtime, broker_timeout=1)}
        assert not checks["upstream_auth"].ok and "Unauthorized" in checks["upstream_auth"].detail
        assert not checks["broker"].ok
        assert checks["database"].ok
    finally:
        runtime.close()


def _last_dispatch(rt: Runtime, seconds_ago: float | None) -> None:
    with rt.sessions.begin() as session:
        session.execute(
            text(
                "UPDATE tracker_control SET last_dispatch_at = "
                "CASE WHEN CAST(:ago AS float) IS NULL THEN NULL "
                "ELSE clock_timestamp() - make_interval(secs => :ago) END"
            ),
            {"ago": seconds_ago},
        )


def _due_now(rt: Runtime) -> None:
    with rt.sessions.begin() as session:
        session.execute(text("UPDATE videos SET next_poll_at = now() WHERE state = 'pending'"))


def test_health_fails_when_no_dispatch_ran_for_three_intervals_while_ids_are_due(
    rt: Runtime,
) -> None:
    interval = rt.settings.dispatch_interval  # the default, 5 s
    api.enqueue(["user:1-pixverse:h@example.com-video:1"], rt=rt)
    # just enqueued: its first look is TRACKER_FIRST_POLL_DELAY away, so no dispatch is owed yet
    _last_dispatch(rt, 3600)
    check = {c.name: c for c in maintenance.health(rt)}["dispatch"]
    assert check.ok and check.detail == "nothing due"
    _due_now(rt)
    _last_dispatch(rt, 3 * interval + 1)  # beat died 16 s ago
    check = {c.name: c for c in maintenance.health(rt)}["dispatch"]
    assert not check.ok
    assert check.detail == (
        "last ran 16s ago (more than 3 x TRACKER_DISPATCH_INTERVAL = 15s) while 1 ids are "
        "due: is beat running, and a worker?"
    )
    _last_dispatch(rt, None)
    check = {c.name: c for c in maintenance.health(rt)}["dispatch"]
    assert not check.ok and check.detail.startswith("has never run")

    dispatch(rt)  # what beat's next tick does: health is fine again
    check = {c.name: c for c in maintenance.health(rt)}["dispatch"]
    assert check.ok and check.detail.startswith("last dispatch")


def test_health_does_not_mind_a_stale_dispatch_when_nothing_is_due(rt: Runtime) -> None:
    _last_dispatch(rt, 3600)
    check = {c.name: c for c in maintenance.health(rt)}["dispatch"]
    assert check.ok and check.detail == "nothing due"
    _last_dispatch(rt, 3 * rt.settings.dispatch_interval - 1)  # within the bound: fine
    api.enqueue(["user:1-pixverse:h@example.com-video:2"], rt=rt)
    assert {c.name: c for c in maintenance.health(rt)}["dispatch"].ok

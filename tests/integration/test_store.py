"""The SQL layer (db/) and the service's writes on real Postgres: enqueue, guarded apply, release, NOTIFY, control and counters."""

from __future__ import annotations

import random
import select
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy import select as sa_select
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker import api
from pixverse_tracker.db.claim import owned_rows
from pixverse_tracker.db.control import add_poll_counts, note_auth_ok
from pixverse_tracker.db.sql import NOTIFY_CHANNEL, current_time
from pixverse_tracker.db.videos import release
from pixverse_tracker.models import Video
from pixverse_tracker.rules.decide import decide
from pixverse_tracker.rules.outcomes import NotYet, PollCounts, Record
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.rules.row import Decision
from pixverse_tracker.rules.state import State
from pixverse_tracker.service import apply as service_apply
from pixverse_tracker.service import enqueue as service_enqueue
from pixverse_tracker.service.claim import Claim, claim_due
from pixverse_tracker.service.enqueue import EnqueueResult
from pixverse_tracker.service.limiter import note_rate_limited, note_unauthorized
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.service.status import summary
from pixverse_tracker.settings import load
from tests.policies import policy_with

DUE_NOW = policy_with(first_poll_delay=0.0)
RNG_SEED = 7


def vid(n: int) -> str:
    return f"user:1-pixverse:me@example.com-video:{n}"


def final_record(video_id: str, url: str = "https://cdn.example.com/v.mp4") -> dict[str, Any]:
    return {
        "video_id": video_id,
        "video_status": 1,
        "video_status_name": "COMPLETED",
        "video_status_final": True,
        "url": url,
        "extra_unknown_field": {"kept": True},
    }


def progress_record(video_id: str) -> dict[str, Any]:
    return {
        "video_id": video_id,
        "video_status": 5,
        "video_status_name": "QUEUED",
        "video_status_final": False,
    }


# --- helpers ------------------------------------------------------------------------------------


def enqueue(
    pg: sessionmaker[Session], ids: Sequence[str], policy: Policy = DUE_NOW, **kw: Any
) -> EnqueueResult:
    with pg.begin() as session:
        return service_enqueue.enqueue(session, list(ids), policy, **kw)


def claim(pg: sessionmaker[Session], *, lease: float = 60.0, rate: float = 1000.0) -> Claim:
    with pg.begin() as session:
        return claim_due(session, rate_limit=rate, horizon=1.0, lease=lease, policy=DUE_NOW)


def decision_for(pg: sessionmaker[Session], token: str, video_id: str, outcome: Any) -> Decision:
    with pg() as session:
        now, views, _ = owned_rows(session, token, [video_id], margin=0.0)
    assert video_id in views, "the claim should still own the row"
    return decide(views[video_id], outcome, now, DUE_NOW, random.Random(RNG_SEED))


def apply(pg: sessionmaker[Session], video_id: str, token: str, decision: Decision) -> bool:
    with pg.begin() as session:
        return service_apply.apply(session, video_id, token, decision)


def row(pg: sessionmaker[Session], video_id: str) -> dict[str, Any]:
    with pg() as session:
        found = (
            session.execute(text("SELECT * FROM videos WHERE video_id = :id"), {"id": video_id})
            .mappings()
            .one()
        )
        return dict(found)


def events(pg: sessionmaker[Session], video_id: str | None = None) -> list[tuple[str, str]]:
    with pg() as session:
        query = "SELECT video_id, kind FROM video_events"
        params: dict[str, Any] = {}
        if video_id is not None:
            query += " WHERE video_id = :id"
            params["id"] = video_id
        return [tuple(r) for r in session.execute(text(query + " ORDER BY id"), params)]  # type: ignore[misc]


def sql(pg: sessionmaker[Session], statement: str, **params: Any) -> None:
    with pg.begin() as session:
        session.execute(text(statement), params)


def claimed_token(pg: sessionmaker[Session], video_id: str) -> str:
    enqueue(pg, [video_id])
    got = claim(pg)
    assert [v for v, _ in got.slots] == [video_id]
    assert got.token is not None
    return got.token


def make_done(pg: sessionmaker[Session], video_id: str) -> dict[str, Any]:
    token = claimed_token(pg, video_id)
    assert apply(
        pg, video_id, token, decision_for(pg, token, video_id, Record(final_record(video_id)))
    )
    return row(pg, video_id)


def expire_lease(pg: sessionmaker[Session], ids: Sequence[str]) -> None:
    sql(
        pg,
        "UPDATE videos SET next_poll_at = now() - interval '1 second', "
        "claimed_until = now() - interval '1 second' WHERE video_id = ANY(:ids)",
        ids=list(ids),
    )


# --- enqueue ------------------------------------------------------------------------------------


def test_ten_thousand_ids_in_one_call_make_every_row_and_event_in_a_handful_of_statements(
    pg: sessionmaker[Session], pg_engine: Engine
) -> None:
    ids = [vid(n) for n in range(10_000)]
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(pg_engine, "before_cursor_execute", count)
    try:
        result = enqueue(pg, ids)
    finally:
        event.remove(pg_engine, "before_cursor_execute", count)

    assert len(statements) < 10, statements
    assert sorted(result.added) == sorted(ids)
    assert result.unchanged == [] and result.rearmed == []
    with pg() as session:
        assert (
            session.execute(
                text("SELECT count(*) FROM videos WHERE state = 'pending'")
            ).scalar_one()
            == 10_000
        )
        assert session.execute(
            text(
                "SELECT count(*), count(DISTINCT video_id) FROM video_events WHERE kind = 'enqueued'"
            )
        ).one() == (10_000, 10_000)
        assert session.execute(text("SELECT count(*) FROM video_events")).scalar_one() == 10_000


def test_new_rows_become_due_after_the_first_poll_delay(pg: sessionmaker[Session]) -> None:
    enqueue(pg, [vid(1)], policy_with(first_poll_delay=42.0))
    got = row(pg, vid(1))
    assert got["state"] == "pending"
    assert got["next_poll_at"] - got["enqueued_at"] == timedelta(seconds=42)
    assert got["enqueued_at"] == got["updated_at"]
    assert (got["poll_count"], got["error_count"], got["claimed_until"], got["record"]) == (
        0,
        0,
        None,
        None,
    )


def test_enqueueing_the_same_id_twice_keeps_one_row_and_one_enqueued_event(
    pg: sessionmaker[Session],
) -> None:
    first = enqueue(pg, [vid(1), vid(1)])
    second = enqueue(pg, [vid(1)])
    assert first.added == [vid(1)]
    assert second.added == [] and second.unchanged == [vid(1)]
    with pg() as session:
        assert session.execute(text("SELECT count(*) FROM videos")).scalar_one() == 1
    assert events(pg) == [(vid(1), "enqueued")]


def test_a_plain_enqueue_never_resets_a_done_row(pg: sessionmaker[Session]) -> None:
    before = make_done(pg, vid(1))
    assert before["state"] == "done" and before["done_at"] is not None

    result = enqueue(pg, [vid(1)])

    assert result.unchanged == [vid(1)] and result.added == [] and result.rearmed == []
    after = row(pg, vid(1))
    assert after == before
    assert [k for _, k in events(pg, vid(1))].count("enqueued") == 1


def test_retrack_rearms_done_and_abandoned_rows_and_leaves_pending_rows_alone(
    pg: sessionmaker[Session],
) -> None:
    done_before = make_done(pg, vid(1))
    enqueue(pg, [vid(2), vid(3)], policy_with(first_poll_delay=300.0))
    sql(
        pg,
        "UPDATE videos SET state = 'abandoned', abandon_reason = 'deleted: gone', next_poll_at = NULL, "
        "done_at = NULL WHERE video_id = :id",
        id=vid(2),
    )
    pending_before = row(pg, vid(3))
    time.sleep(0.01)  # so a new enqueued_at is visibly later

    result = enqueue(
        pg, [vid(1), vid(2), vid(3), vid(4)], policy_with(first_poll_delay=30.0), retrack=True
    )

    assert sorted(result.rearmed) == [vid(1), vid(2)]
    assert result.added == [vid(4)]
    assert result.unchanged == [vid(3)]
    for video_id in (vid(1), vid(2)):
        got = row(pg, video_id)
        assert got["state"] == "pending"
        assert got["done_at"] is None
        assert got["abandon_reason"] is None
        assert got["claimed_until"] is None and got["claim_token"] is None
        assert got["enqueued_at"] > done_before["enqueued_at"]
        assert got["next_poll_at"] - got["enqueued_at"] == timedelta(seconds=30)
        assert [k for _, k in events(pg, video_id)][-1] == "retracked"
    assert row(pg, vid(3)) == pending_before
    assert "retracked" not in [k for _, k in events(pg, vid(3))]
    assert [k for _, k in events(pg, vid(4))] == ["enqueued"]


@pytest.fixture
def runtime(pg: sessionmaker[Session], pg_database: str) -> Iterator[Runtime]:
    rt = Runtime(load({"DATABASE_URL": pg_database}))
    yield rt
    rt.close()


def test_api_enqueue_stores_the_valid_ids_and_reports_each_invalid_one_by_position(
    runtime: Runtime, pg: sessionmaker[Session]
) -> None:
    given = [vid(1), "not-an-id", vid(2), "", vid(1), "user:1-pixverse:me@example.com-video:3 "]

    report = api.enqueue(given, rt=runtime)

    assert not report.ok
    assert report.added == [vid(1), vid(2)]
    assert [(r.where, r.video_id) for r in report.refused] == [
        (2, "not-an-id"),
        (4, ""),
        (6, "user:1-pixverse:me@example.com-video:3 "),
    ]
    assert all(r.problem for r in report.refused)
    with pg() as session:
        stored = (
            session.execute(text("SELECT video_id FROM videos ORDER BY video_id")).scalars().all()
        )
    assert stored == [vid(1), vid(2)]


def test_api_enqueue_with_only_valid_ids_is_ok_and_idempotent(runtime: Runtime) -> None:
    assert api.enqueue([vid(1)], rt=runtime).added == [vid(1)]
    again = api.enqueue([vid(1)], rt=runtime)
    assert again.ok and again.added == [] and again.unchanged == [vid(1)]


def test_the_state_column_is_a_state_in_python_and_its_plain_string_in_the_table(
    runtime: Runtime, pg: sessionmaker[Session]
) -> None:
    make_done(pg, vid(2))
    enqueue(pg, [vid(1)])
    with pg() as session:
        assert session.get(Video, vid(1)).state is State.PENDING  # type: ignore[union-attr]
        assert session.get(Video, vid(2)).state is State.DONE  # type: ignore[union-attr]
        stored = session.execute(text("SELECT state FROM videos ORDER BY video_id")).scalars()
        assert [(type(s), s) for s in stored] == [(str, "pending"), (str, "done")]
        # a filter takes the State or its string alike; an unknown string matches nothing
        for value in (State.DONE, "done"):
            assert session.scalars(sa_select(Video.video_id).where(Video.state == value)).all() == [
                vid(2)
            ]
        assert session.scalars(sa_select(Video).where(Video.state == "unknown")).all() == []
    # applications get the plain string, as they always did
    view = api.get(vid(1), rt=runtime)
    assert view is not None and type(view.state) is str and view.state == "pending"
    assert "state='pending'" in repr(view)


# --- the guarded apply --------------------------------------------------------------------------


def test_apply_with_the_claims_token_finishes_the_row_and_writes_its_events(
    pg: sessionmaker[Session],
) -> None:
    token = claimed_token(pg, vid(1))
    record = final_record(vid(1))
    decision = decision_for(pg, token, vid(1), Record(record))

    assert apply(pg, vid(1), token, decision) is True

    got = row(pg, vid(1))
    assert got["state"] == "done"
    assert got["done_at"] is not None and got["done_at"] == got["updated_at"]
    assert (
        got["claimed_until"] is None and got["claim_token"] is None and got["next_poll_at"] is None
    )
    assert got["record"] == record
    assert (got["status_code"], got["status_name"], got["status_final"]) == (1, "COMPLETED", True)
    assert got["url"] == record["url"]
    assert got["poll_count"] == 1
    assert [k for _, k in events(pg, vid(1))] == ["enqueued", "status", "done"]


def test_applying_the_same_decision_twice_changes_nothing_the_second_time(
    pg: sessionmaker[Session],
) -> None:
    token = claimed_token(pg, vid(1))
    decision = decision_for(pg, token, vid(1), Record(final_record(vid(1))))
    assert apply(pg, vid(1), token, decision) is True
    before, before_events = row(pg, vid(1)), events(pg)

    assert apply(pg, vid(1), token, decision) is False

    assert row(pg, vid(1)) == before
    assert events(pg) == before_events


def test_a_token_from_an_older_claim_cannot_overwrite_the_newer_claims_row(
    pg: sessionmaker[Session],
) -> None:
    old_token = claimed_token(pg, vid(1))
    old_decision = decision_for(
        pg, old_token, vid(1), Record(final_record(vid(1), "https://old.example/v.mp4"))
    )
    expire_lease(pg, [vid(1)])
    newer = claim(pg)
    assert [v for v, _ in newer.slots] == [vid(1)]
    assert newer.token is not None and newer.token != old_token

    # the old worker answers late, while the new claim is live
    assert apply(pg, vid(1), old_token, old_decision) is False
    got = row(pg, vid(1))
    assert got["state"] == "pending" and got["record"] is None and got["claim_token"] == newer.token

    # the new claimant writes a progress record; the old answer still cannot replace it
    progress = progress_record(vid(1))
    assert (
        apply(pg, vid(1), newer.token, decision_for(pg, newer.token, vid(1), Record(progress)))
        is True
    )
    assert apply(pg, vid(1), old_token, old_decision) is False
    got = row(pg, vid(1))
    assert got["state"] == "pending" and got["record"] == progress and got["status_code"] == 5
    assert "done" not in [k for _, k in events(pg, vid(1))]


def test_apply_never_moves_a_row_that_is_already_done(pg: sessionmaker[Session]) -> None:
    token = claimed_token(pg, vid(1))
    decision = decision_for(pg, token, vid(1), Record(final_record(vid(1))))
    sql(pg, "UPDATE videos SET state = 'done', done_at = now() WHERE video_id = :id", id=vid(1))
    before, before_events = row(pg, vid(1)), events(pg)

    assert apply(pg, vid(1), token, decision) is False

    assert row(pg, vid(1)) == before
    assert before["claim_token"] == token  # only the state guard stopped it
    assert events(pg) == before_events


def test_a_non_final_record_keeps_the_row_pending_and_gives_the_claim_back(
    pg: sessionmaker[Session],
) -> None:
    token = claimed_token(pg, vid(1))
    decision = decision_for(pg, token, vid(1), Record(progress_record(vid(1))))
    assert apply(pg, vid(1), token, decision) is True
    got = row(pg, vid(1))
    assert got["state"] == "pending" and got["done_at"] is None
    assert got["claim_token"] is None and got["claimed_until"] is None
    assert got["next_poll_at"] - got["updated_at"] >= timedelta(seconds=DUE_NOW.poll_interval_min)
    assert got["poll_count"] == 1 and got["status_code"] == 5


def test_owned_rows_finds_nothing_for_a_stale_token(pg: sessionmaker[Session]) -> None:
    token = claimed_token(pg, vid(1))
    with pg() as session:
        _, mine, _ = owned_rows(session, token, [vid(1)], margin=1.0)
        _, stale, _ = owned_rows(session, "0" * 32, [vid(1)], margin=1.0)
    assert list(mine) == [vid(1)]
    assert mine[vid(1)].poll_count == 0 and mine[vid(1)].has_record is False
    assert stale == {}


def test_owned_rows_finds_nothing_when_less_than_the_margin_of_lease_remains(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(1)])
    token = claim(pg, lease=10.0).token
    assert token is not None
    with pg() as session:
        _, roomy, _ = owned_rows(session, token, [vid(1)], margin=5.0)
        _, tight, _ = owned_rows(session, token, [vid(1)], margin=15.0)
    assert list(roomy) == [vid(1)]
    assert tight == {}


def test_owned_rows_reports_whether_the_upstream_is_rejecting_the_token(
    pg: sessionmaker[Session],
) -> None:
    token = claimed_token(pg, vid(1))
    sql(pg, "UPDATE tracker_control SET auth_failing = true")
    with pg() as session:
        _, views, failing = owned_rows(session, token, [vid(1)], margin=0.0)
    assert failing is True and list(views) == [vid(1)]


def test_release_frees_claimed_rows_without_counting_a_poll_or_an_error(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(1), vid(2)])
    got = claim(pg)
    assert got.token is not None and len(got.slots) == 2

    with pg.begin() as session:
        assert release(session, "f" * 32, [vid(1), vid(2)], None) == 0
        assert release(session, got.token, [vid(1), vid(2)], None) == 2
        now = current_time(session)

    for video_id in (vid(1), vid(2)):
        r = row(pg, video_id)
        assert r["claimed_until"] is None and r["claim_token"] is None
        assert r["next_poll_at"] <= now
        assert (r["poll_count"], r["error_count"], r["state"]) == (0, 0, "pending")
    again = claim(pg)
    assert sorted(v for v, _ in again.slots) == [vid(1), vid(2)]


def test_release_until_a_time_makes_the_rows_due_then(pg: sessionmaker[Session]) -> None:
    enqueue(pg, [vid(1)])
    got = claim(pg)
    assert got.token is not None
    later = got.now + timedelta(minutes=5)
    with pg.begin() as session:
        assert release(session, got.token, [vid(1)], later) == 1
    assert row(pg, vid(1))["next_poll_at"] == later
    assert claim(pg).slots == []


# --- NOTIFY -------------------------------------------------------------------------------------


@pytest.fixture
def listener(pg_engine: Engine) -> Iterator[psycopg2.extensions.connection]:
    dsn = pg_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(dsn)
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    with conn.cursor() as cursor:
        cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
    yield conn
    conn.close()


def heard(conn: psycopg2.extensions.connection, wait: float) -> list[tuple[str, str]]:
    """Every notification that arrives within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    got: list[tuple[str, str]] = []
    while (left := deadline - time.monotonic()) > 0:
        if select.select([conn], [], [], left)[0]:
            conn.poll()
            while conn.notifies:
                note = conn.notifies.pop(0)
                got.append((note.channel, note.payload))
    return got


def test_a_row_becoming_done_notifies_listeners_once_with_its_id(
    pg: sessionmaker[Session], listener: psycopg2.extensions.connection
) -> None:
    token = claimed_token(pg, vid(1))
    decision = decision_for(pg, token, vid(1), Record(final_record(vid(1))))
    assert heard(listener, 0.05) == []

    assert apply(pg, vid(1), token, decision) is True
    assert apply(pg, vid(1), token, decision) is False  # a duplicate answer must not notify again

    assert heard(listener, 0.5) == [("video_done", vid(1))]


def test_a_rolled_back_apply_notifies_nobody(
    pg: sessionmaker[Session], listener: psycopg2.extensions.connection
) -> None:
    token = claimed_token(pg, vid(1))
    decision = decision_for(pg, token, vid(1), Record(final_record(vid(1))))
    with pg() as session:
        assert service_apply.apply(session, vid(1), token, decision) is True
        session.rollback()
    assert heard(listener, 0.5) == []
    assert row(pg, vid(1))["state"] == "pending"


def test_a_non_final_record_or_a_not_yet_notifies_nobody(
    pg: sessionmaker[Session], listener: psycopg2.extensions.connection
) -> None:
    token = claimed_token(pg, vid(1))
    assert apply(
        pg, vid(1), token, decision_for(pg, token, vid(1), Record(progress_record(vid(1))))
    )
    expire_lease(pg, [vid(1)])
    token = claim(pg).token
    assert token is not None
    assert apply(pg, vid(1), token, decision_for(pg, token, vid(1), NotYet("not ready")))
    assert heard(listener, 0.5) == []


# --- the control row and the counters -------------------------------------------------------------


def control(pg: sessionmaker[Session]) -> dict[str, Any]:
    with pg() as session:
        return dict(
            session.execute(text("SELECT * FROM tracker_control WHERE id = 1")).mappings().one()
        )


def test_a_429_halves_the_rate_once_and_pauses_for_retry_after(pg: sessionmaker[Session]) -> None:
    policy = policy_with(rate_limit_pause=15.0, rate_recovery=60.0)
    with pg.begin() as session:
        until = note_rate_limited(session, 30.0, policy)
    first = control(pg)
    assert first["rate_factor"] == 0.5
    assert first["throttled_until"] == until
    assert first["throttled_until"] - first["rate_factor_at"] == timedelta(seconds=30)

    # a second 429 inside the pause does not halve again; a longer Retry-After extends the pause
    with pg.begin() as session:
        note_rate_limited(session, 120.0, policy)
    second = control(pg)
    assert second["rate_factor"] == 0.5 and second["rate_factor_at"] == first["rate_factor_at"]
    assert second["throttled_until"] > first["throttled_until"] + timedelta(seconds=60)

    # a shorter one never shortens it
    with pg.begin() as session:
        note_rate_limited(session, 1.0, policy)
    assert control(pg)["throttled_until"] == second["throttled_until"]


def test_a_429_without_retry_after_pauses_for_the_default(pg: sessionmaker[Session]) -> None:
    with pg.begin() as session:
        note_rate_limited(session, None, policy_with(rate_limit_pause=15.0))
    got = control(pg)
    assert got["throttled_until"] - got["rate_factor_at"] == timedelta(seconds=15)


def test_a_401_marks_auth_failing_and_pauses_and_auth_ok_clears_it(
    pg: sessionmaker[Session],
) -> None:
    policy = policy_with(auth_pause=60.0)
    with pg.begin() as session:
        until = note_unauthorized(session, "Unauthorized: bad token", policy)
    first = control(pg)
    assert first["auth_failing"] is True
    assert first["auth_error"] == "Unauthorized: bad token"
    assert first["auth_paused_until"] == until
    assert first["auth_paused_until"] - first["auth_failed_at"] == timedelta(seconds=60)

    with pg.begin() as session:
        note_unauthorized(session, "still bad", policy)
    second = control(pg)
    assert second["auth_failed_at"] == first["auth_failed_at"]  # when it started failing
    assert second["auth_error"] == "still bad"
    assert second["auth_paused_until"] > first["auth_paused_until"]

    with pg.begin() as session:
        note_auth_ok(session)
    cleared = control(pg)
    assert cleared["auth_failing"] is False
    assert cleared["auth_paused_until"] is None and cleared["auth_error"] is None


def away_from_a_minute_boundary(pg: sessionmaker[Session]) -> None:
    """Each upsert reads the clock itself; make sure a new minute does not start in between."""
    with pg() as session:
        second = current_time(session).second
    if second >= 58:
        time.sleep(61 - second)


def test_poll_counts_in_the_same_minute_add_up_in_one_row(pg: sessionmaker[Session]) -> None:
    away_from_a_minute_boundary(pg)
    with pg.begin() as session:
        add_poll_counts(session, PollCounts(polls=3, errors=1, rate_limited=0, unauthorized=1))
        add_poll_counts(session, PollCounts(polls=2, errors=0, rate_limited=2, unauthorized=0))
        add_poll_counts(session, PollCounts())  # nothing polled: nothing written
    with pg() as session:
        rows = session.execute(
            text("SELECT minute, polls, errors, rate_limited, unauthorized FROM poll_minutes")
        ).all()
    assert len(rows) == 1
    minute, *counts = rows[0]
    assert counts == [5, 1, 2, 1]
    assert (minute.second, minute.microsecond) == (0, 0)


def test_summary_reports_states_oldest_pending_recent_polls_and_auth(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(1)], policy_with(first_poll_delay=600.0))
    make_done(pg, vid(2))
    enqueue(pg, [vid(3), vid(4)], policy_with(first_poll_delay=600.0))
    sql(
        pg,
        "UPDATE videos SET state = 'abandoned', next_poll_at = NULL WHERE video_id = :id",
        id=vid(4),
    )
    sql(
        pg,
        "UPDATE videos SET next_poll_at = now() - interval '1 second' WHERE video_id = :id",
        id=vid(3),
    )
    sql(
        pg,
        "INSERT INTO poll_minutes (minute, polls, errors) VALUES "
        "(date_trunc('minute', now()) - interval '10 minutes', 4, 1), "
        "(date_trunc('minute', now()) - interval '2 hours', 100, 50)",
    )
    with pg.begin() as session:
        add_poll_counts(session, PollCounts(polls=3, errors=2))
        note_unauthorized(session, "bad token", policy_with())

    with pg() as session:
        s = summary(session, policy_with())

    assert s.counts == {"pending": 2, "done": 1, "abandoned": 1}
    assert s.due_now == 1
    assert s.oldest_pending_id == vid(1)
    assert s.oldest_pending_since == row(pg, vid(1))["enqueued_at"]
    assert (s.polls_last_hour, s.errors_last_hour) == (7, 3)
    assert s.auth_failing is True and s.auth_error == "bad token"
    assert s.auth_paused_until is not None and s.auth_paused_until > s.now


def test_summary_of_an_empty_tracker_is_all_zero(pg: sessionmaker[Session]) -> None:
    with pg() as session:
        s = summary(session, policy_with())
    assert s.counts == {"pending": 0, "done": 0, "abandoned": 0}
    assert s.oldest_pending_id is None and s.polls_last_hour == 0
    assert s.auth_failing is False and s.rate_factor == 1.0

"""The poll loop end to end, Celery-free: dispatch + poll_batch against real Postgres and the
in-process simulator, with timings compressed to fractions of a second.

Each test builds its own ``Runtime`` from a settings dict, drives ``dispatch`` and
``poll_batch`` in a small loop, and checks what a user would notice: the rows, their
events, the control row, ``status`` (``service_status.summary``) and what the upstream was sent.
"""

from __future__ import annotations

import itertools
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker import api
from pixverse_tracker.db import claim as db_claim
from pixverse_tracker.db import videos as db_videos
from pixverse_tracker.db.reports import Summary, done_event_counts
from pixverse_tracker.db.sql import NOTIFY_CHANNEL
from pixverse_tracker.rules import decide, limiter, timing
from pixverse_tracker.service import answers, batch_state, job_queue
from pixverse_tracker.service import batch as batch_module
from pixverse_tracker.service import claim as service_claim
from pixverse_tracker.service import dispatch as dispatch_module
from pixverse_tracker.service import limiter as service_limiter
from pixverse_tracker.service import status as service_status
from pixverse_tracker.service.apply import apply
from pixverse_tracker.service.batch import poll_batch
from pixverse_tracker.service.batch_state import BatchReport
from pixverse_tracker.service.dispatch import Batch, dispatch
from pixverse_tracker.service.limiter import SLOT_LEAD
from pixverse_tracker.service.pacing import late_tolerance
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import load
from pixverse_tracker.testing import LoggedRequest, Simulator, make_id

TOKEN = "poller-test-token"
DEFAULT_DELAY = 0.5

BASE_ENV = {
    "USEAPI_TOKEN": TOKEN,
    "TRACKER_DISPATCH_INTERVAL": "0.5",
    "TRACKER_FIRST_POLL_DELAY": "0",
    "TRACKER_POLL_INTERVAL_MIN": "0.3",
    "TRACKER_POLL_INTERVAL_MAX": "1",
    "TRACKER_LIST_INTERVAL": "0.3",
    # These tests pin down single-video polling (also the list's fallback); the list endpoint
    # has its own in test_listing.py.
    "TRACKER_LIST": "false",
    "TRACKER_HTTP_TIMEOUT": "0.5",
    "TRACKER_HTTP_CONNECT_TIMEOUT": "0.5",
    "TRACKER_RATE_LIMIT": "50",
    "TRACKER_AUTH_PAUSE": "1",
    "TRACKER_RATE_LIMIT_PAUSE": "0.5",
}


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN, default_delay=DEFAULT_DELAY) as simulator:
        yield simulator


@contextmanager
def tracker(pg_database: str, sim: Simulator, **overrides: str) -> Iterator[Runtime]:
    env = {**BASE_ENV, "DATABASE_URL": pg_database, "USEAPI_BASE_URL": sim.base_url, **overrides}
    rt = Runtime(load(env))
    try:
        yield rt
    finally:
        rt.close()


def enqueue(rt: Runtime, ids: list[str]) -> None:
    report = api.enqueue(ids, rt=rt)
    assert report.ok and sorted(report.added) == sorted(ids), report


def run_batches(rt: Runtime, batches: list[Batch]) -> list[BatchReport]:
    return [poll_batch(rt, batch) for batch in batches]


def pending_count(pg: sessionmaker[Session]) -> int:
    with pg() as session:
        return int(
            session.execute(
                text("SELECT count(*) FROM videos WHERE state = 'pending'")
            ).scalar_one()
        )


def drive(
    rt: Runtime,
    pg: sessionmaker[Session],
    *,
    timeout: float,
    until: Callable[[], bool] | None = None,
) -> list[BatchReport]:
    """What beat + workers do, in one thread: dispatch, poll every batch, repeat."""
    finished = until or (lambda: pending_count(pg) == 0)
    reports: list[BatchReport] = []
    deadline = time.monotonic() + timeout
    while not finished():
        assert time.monotonic() < deadline, f"still pending after {timeout}s: {rows(pg)}"
        batches = dispatch(rt)
        reports.extend(run_batches(rt, batches))
        if not batches:
            time.sleep(0.02)
    return reports


def rows(pg: sessionmaker[Session]) -> dict[str, dict[str, Any]]:
    with pg() as session:
        found = session.execute(text("SELECT * FROM videos ORDER BY video_id")).mappings().all()
    return {r["video_id"]: dict(r) for r in found}


def events(pg: sessionmaker[Session], video_id: str) -> list[dict[str, Any]]:
    with pg() as session:
        found = (
            session.execute(
                text("SELECT * FROM video_events WHERE video_id = :id ORDER BY id"),
                {"id": video_id},
            )
            .mappings()
            .all()
        )
    return [dict(e) for e in found]


def kinds(pg: sessionmaker[Session], video_id: str) -> list[str]:
    return [e["kind"] for e in events(pg, video_id)]


def control(pg: sessionmaker[Session]) -> dict[str, Any]:
    with pg() as session:
        return dict(
            session.execute(text("SELECT * FROM tracker_control WHERE id = 1")).mappings().one()
        )


def db_now(pg: sessionmaker[Session]) -> datetime:
    with pg() as session:
        value: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value


def clock_pair(pg: sessionmaker[Session]) -> tuple[datetime, float]:
    """(database time, this process's monotonic time) at the same instant, within ~1 ms."""
    with pg() as session:
        session.execute(text("SELECT 1"))  # connection checked out before timing
        before = time.monotonic()
        value: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        after = time.monotonic()
    return value, (before + after) / 2


def summary(rt: Runtime) -> Summary:
    with rt.sessions() as session:
        return service_status.summary(session, rt.policy)


def authorized(requests: list[LoggedRequest]) -> list[LoggedRequest]:
    return [r for r in requests if r.authorized]


def sql(pg: sessionmaker[Session], statement: str, **params: Any) -> None:
    with pg.begin() as session:
        session.execute(text(statement), params)


@contextmanager
def listening(pg_engine: Engine) -> Iterator[psycopg2.extensions.connection]:
    dsn = pg_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(dsn)
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    with conn.cursor() as cursor:
        cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
    try:
        yield conn
    finally:
        conn.close()


def heard(conn: psycopg2.extensions.connection, wait: float) -> list[str]:
    deadline = time.monotonic() + wait
    got: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        if select.select([conn], [], [], left) != ([], [], []):
            conn.poll()
            while conn.notifies:
                got.append(conn.notifies.pop(0).payload)
    return got


# --- every kind of answer ends where the README table says ----------------------------------------

MIXED = {
    "completed": make_id("completed_0.5", 1),
    "generating": make_id("generating_0.3_1.5", 2),
    "failed": make_id("failed_0.5", 3),
    "moderated": make_id("moderated_0.5", 4),
    "deleted": make_id("deleted_0.5", 5),
    "rejected": make_id("rejected", 6),
    "errors": make_id("errors_4_0.5", 7),
    "garbage": make_id("garbage_5_0.5", 8),
    "queuedfinal": make_id("queuedfinal_0.2_1.5", 9),
    "nourl": make_id("nourl_0.2_1.5", 10),
    "unknown": make_id("unknown_0.2_1.5", 11),
    "never": make_id("never", 12),
    "untagged": "user:1-pixverse:someone@example.com-video:13",
}
GIVE_UP = 4.0


def test_a_mixed_batch_ends_in_the_states_the_readme_promises(
    pg: sessionmaker[Session], pg_engine: Engine, pg_database: str, sim: Simulator
) -> None:
    ids = list(MIXED.values())
    with (
        listening(pg_engine) as listener,
        tracker(
            pg_database,
            sim,
            TRACKER_GIVE_UP_AFTER=f"{GIVE_UP:g}",
            TRACKER_POLL_INTERVAL_MAX="0.6",
        ) as rt,
    ):
        enqueue(rt, ids)
        ref_db, ref_mono = clock_pair(pg)
        reports = drive(rt, pg, timeout=GIVE_UP + 4)
        notified = heard(listener, 0.3)

    got = rows(pg)
    by = {name: got[video_id] for name, video_id in MIXED.items()}
    assert sum(r.failed_to_store for r in reports) == 0

    # final successes: done, COMPLETED with its url, done_at set, exactly one done event
    for name in ("completed", "generating", "errors", "garbage", "queuedfinal", "nourl"):
        row = by[name]
        assert row["state"] == "done", (name, row)
        assert (row["status_code"], row["status_name"], row["status_final"]) == (
            1,
            "COMPLETED",
            True,
        ), name
        assert row["url"] and row["url"].endswith(".mp4"), name
        assert row["record"]["video_id"] == MIXED[name]
        assert row["done_at"] is not None and row["next_poll_at"] is None
        assert row["claim_token"] is None and row["claimed_until"] is None
    for name in ("unknown", "untagged"):
        assert by[name]["state"] == "done" and by[name]["status_code"] == 1, name

    # final failures are done too: status_name tells the story
    assert (by["failed"]["state"], by["failed"]["status_code"], by["failed"]["status_name"]) == (
        "done",
        8,
        "FAILED",
    )
    assert (
        by["moderated"]["state"],
        by["moderated"]["status_code"],
        by["moderated"]["status_name"],
    ) == ("done", 7, "MODERATED")
    assert by["failed"]["url"] is None and by["failed"]["done_at"] is not None

    # abandoned: deleted (the specific 404 text), rejected (400), expired (never)
    assert by["deleted"]["state"] == "abandoned"
    assert by["deleted"]["abandon_reason"] == "deleted: The original video has been deleted"
    assert by["rejected"]["state"] == "abandoned"
    assert by["rejected"]["abandon_reason"] == "rejected: Invalid video_id"
    assert by["rejected"]["last_http_status"] == 400
    assert len(sim.requests_for(MIXED["rejected"])) == 1
    assert by["never"]["state"] == "abandoned"
    assert by["never"]["abandon_reason"].startswith("expired:")
    for name in ("deleted", "rejected", "never"):
        assert by[name]["done_at"] is None and by[name]["next_poll_at"] is None, name
        assert kinds(pg, MIXED[name]).count("abandoned") == 1, name
        assert "done" not in kinds(pg, MIXED[name]), name

    # errors and garbage: every bad answer counted once, with an error event; no penalty else
    assert by["errors"]["error_count"] == 4
    assert kinds(pg, MIXED["errors"]).count("error") == 4
    assert {e["http_status"] for e in events(pg, MIXED["errors"]) if e["kind"] == "error"} == {
        500,
        502,
        503,
        504,
    }
    assert by["garbage"]["error_count"] == 5
    assert kinds(pg, MIXED["garbage"]).count("error") == 5
    assert by["errors"]["last_error"] is None  # cleared by the good answer that followed
    for name in set(MIXED) - {"errors", "garbage"}:
        assert by[name]["error_count"] == 0, (name, by[name])

    # the way there: GENERATING and MYSTERY stored on the way, anomalies logged as events
    generating = events(pg, MIXED["generating"])
    assert any(e["kind"] == "status" and e["status_code"] == 10 for e in generating)
    unknown = events(pg, MIXED["unknown"])
    assert any(e["kind"] == "status" and e["status_name"] == "MYSTERY" for e in unknown)
    assert "anomaly" not in [e["kind"] for e in unknown]
    assert "anomaly" in kinds(pg, MIXED["queuedfinal"])
    assert "anomaly" in kinds(pg, MIXED["nourl"])

    # every request the upstream saw is accounted for in exactly one counter, none overlapped
    for name, video_id in MIXED.items():
        seen = sim.requests_for(video_id)
        row = got[video_id]
        assert row["poll_count"] + row["error_count"] == len(seen), (name, row, seen)
        assert kinds(pg, video_id)[0] == "enqueued"
    assert sim.overlapping_requests() == 0

    # done rows: one done event each, one NOTIFY each; the view lists the COMPLETED ones
    done = {v for v, r in got.items() if r["state"] == "done"}
    with pg() as session:
        assert dict(done_event_counts(session)) == dict.fromkeys(done, 1)
        view = set(session.execute(text("SELECT video_id FROM completed_videos")).scalars())
    assert sorted(notified) == sorted(done)
    assert view == done - {MIXED["failed"], MIXED["moderated"]}

    # 'never' expired only after a poll at or past its deadline, not before
    never = got[MIXED["never"]]
    deadline_db = never["enqueued_at"] + timedelta(seconds=GIVE_UP)
    deadline_mono = ref_mono + (deadline_db - ref_db).total_seconds()
    never_requests = sim.requests_for(MIXED["never"])
    assert never_requests[-1].started >= deadline_mono - 0.02, (
        never_requests[-1].started - deadline_mono
    )
    assert all(r.started < deadline_mono for r in never_requests[:-1])
    assert never["last_polled_at"] >= deadline_db
    assert len(never_requests) >= 4  # polled on the way, with backoff, not just once at the end


def test_expiry_needs_a_poll_sent_at_or_after_the_deadline_even_when_the_upstream_is_slow(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    # First poll 0.7 s after enqueue, deadline at 1 s, answers take 0.6 s: the first request is
    # sent before the deadline and answered after it.
    video_id = make_id("never", 1)
    sim.latency = 0.6
    with tracker(
        pg_database,
        sim,
        TRACKER_GIVE_UP_AFTER="1",
        TRACKER_FIRST_POLL_DELAY="0.7",
        TRACKER_HTTP_TIMEOUT="1.5",
    ) as rt:
        enqueue(rt, [video_id])
        ref_db, ref_mono = clock_pair(pg)
        drive(rt, pg, timeout=8)

    row = rows(pg)[video_id]
    assert row["state"] == "abandoned" and row["abandon_reason"].startswith("expired:")
    deadline_db = row["enqueued_at"] + timedelta(seconds=1)
    deadline_mono = ref_mono + (deadline_db - ref_db).total_seconds()
    sent = sim.requests_for(video_id)
    assert sent[-1].started >= deadline_mono - 0.02, [r.started - deadline_mono for r in sent]


# --- 401: pause everyone, probe, recover by itself ---------------------------------------------------


def test_a_401_pauses_all_polling_probes_once_after_the_pause_and_recovers_without_penalty(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = [make_id("completed_0.3", n) for n in range(1, 6)]
    sim.token = "someone-revoked-it"
    # 10/s: slots 0.1 s apart, so the first 401 is in long before the second slot
    with tracker(pg_database, sim, TRACKER_RATE_LIMIT="10") as rt:
        enqueue(rt, ids)

        first = dispatch(rt)
        assert sum(len(b.items) for b in first) == len(ids)
        reports = run_batches(rt, first)
        fired = sum(r.polled for r in reports)
        assert fired == 1  # the batch stops firing at the first 401
        assert sum(r.released for r in reports) == len(ids) - fired
        assert len(sim.requests) == fired and all(r.status == 401 for r in sim.requests)

        ctl = control(pg)
        now = db_now(pg)
        assert ctl["auth_failing"] is True
        assert ctl["auth_paused_until"] > now
        assert ctl["auth_error"] == "Unauthorized"
        status = summary(rt)
        assert status.auth_failing is True and status.unauthorized_last_hour == fired
        for row in rows(pg).values():
            assert row["state"] == "pending"
            assert (row["poll_count"], row["error_count"]) == (0, 0)
            assert row["claim_token"] is None
            assert row["next_poll_at"] >= ctl["auth_paused_until"] - timedelta(seconds=0.05)

        # during the pause dispatch claims nothing; right after it, exactly one probe
        paused_until = ctl["auth_paused_until"]
        empty_calls = 0
        while True:
            batches = dispatch(rt)
            if batches:
                break
            empty_calls += 1
            time.sleep(0.05)
            assert db_now(pg) < paused_until + timedelta(seconds=1), "no probe after the pause"
        assert empty_calls >= 5
        assert all(b.start >= paused_until for b in batches)
        assert sum(len(b.items) for b in batches) == 1
        run_batches(rt, batches)  # the token is still bad: the probe gets 401 too
        assert len(sim.requests) == fired + 1 and sim.requests[-1].status == 401
        ctl = control(pg)
        assert ctl["auth_failing"] is True and ctl["auth_paused_until"] > paused_until
        assert summary(rt).auth_failing is True
        assert dispatch(rt) == []  # paused again

        # the token works again: the next probe clears the flag by itself, then everything runs
        sim.token = TOKEN
        paused_until = ctl["auth_paused_until"]
        while not (batches := dispatch(rt)):
            time.sleep(0.05)
        assert sum(len(b.items) for b in batches) == 1
        probed = batches[0].items[0][0]
        run_batches(rt, batches)
        ctl = control(pg)
        assert ctl["auth_failing"] is False
        assert ctl["auth_paused_until"] is None and ctl["auth_error"] is None
        assert summary(rt).auth_failing is False
        batches = dispatch(rt)
        # no longer one at a time: every other id at once (and the probed one again if its
        # next poll falls within this dispatch interval)
        claimed = {v for b in batches for v, _ in b.items}
        assert claimed - {probed} == set(ids) - {probed}
        run_batches(rt, batches)
        drive(rt, pg, timeout=5)

    unauthorized = [r for r in sim.requests if r.status == 401]
    assert len(unauthorized) == fired + 1
    for video_id, row in rows(pg).items():
        assert row["state"] == "done", row
        assert row["error_count"] == 0
        assert row["poll_count"] == len(authorized(sim.requests_for(video_id)))
        assert "error" not in kinds(pg, video_id)
        assert "abandoned" not in kinds(pg, video_id)


def test_only_one_probe_is_out_at_a_time_while_the_token_is_known_bad(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = [make_id("completed_0.3", n) for n in range(1, 6)]
    sim.token = "someone-revoked-it"
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        run_batches(rt, dispatch(rt))
        assert control(pg)["auth_failing"] is True
        while not (probe := dispatch(rt)):
            time.sleep(0.05)
        assert sum(len(b.items) for b in probe) == 1
        # the probe has not answered yet; a second dispatch must not send another one
        second = dispatch(rt)
        run_batches(rt, probe + second)
        assert sum(len(b.items) for b in second) == 0


# --- 429: stop firing, slow down, no penalty -----------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "expected_pause"),
    [("ratelimit_1_0.3", 0.5), ("retryafter_1_1.5_0.3", 1.5)],
    ids=["no-retry-after", "retry-after"],
)
def test_a_429_stops_the_batch_halves_the_rate_pauses_and_penalises_nobody(
    pg: sessionmaker[Session],
    pg_database: str,
    sim: Simulator,
    scenario: str,
    expected_pause: float,
) -> None:
    head = make_id(scenario, 1, user=0)  # sorts first: the first slot of the batch
    others = [make_id("completed_0.3", n) for n in range(2, 7)]
    with tracker(pg_database, sim, TRACKER_RATE_LIMIT="10", TRACKER_DISPATCH_INTERVAL="1") as rt:
        enqueue(rt, [head])
        enqueue(rt, others)

        batches = dispatch(rt)
        assert len(batches) == 1 and batches[0].items[0][0] == head
        assert len(batches[0].items) == 1 + len(others)
        (report,) = run_batches(rt, batches)
        assert report.polled == 1 and report.released == len(others)
        assert [r.video_id for r in sim.requests] == [head]
        assert sim.requests[0].status == 429

        ctl = control(pg)
        got = rows(pg)
        assert ctl["rate_factor"] == pytest.approx(0.5)
        assert ctl["rate_factor_at"] is not None
        limited_at = got[head]["updated_at"]
        pause = (ctl["throttled_until"] - limited_at).total_seconds()
        assert pause == pytest.approx(expected_pause, abs=0.15)
        assert summary(rt).rate_factor < 1
        for row in got.values():
            assert row["state"] == "pending"
            assert (row["poll_count"], row["error_count"]) == (0, 0), row
            assert row["claim_token"] is None
        assert got[head]["last_http_status"] == 429
        for video_id in others:
            assert got[video_id]["next_poll_at"] == ctl["throttled_until"]
            assert sim.requests_for(video_id) == []

        # nothing is claimed while throttled
        throttled_until = ctl["throttled_until"]
        while db_now(pg) < throttled_until - timedelta(seconds=0.05):
            assert dispatch(rt) == []
            time.sleep(0.05)

        drive(rt, pg, timeout=6)
        assert summary(rt).rate_limited_last_hour == 1

    requests = sim.requests
    limited = requests[0]
    resumed = requests[1:]
    assert resumed[0].started - limited.started >= expected_pause - 0.05
    # the halved rate: about 5/s right after the throttle, not 10/s
    starts = [r.started for r in resumed[: len(others)]]
    mean_gap = (starts[-1] - starts[0]) / (len(starts) - 1)
    assert mean_gap >= 0.15, mean_gap
    for video_id, row in rows(pg).items():
        assert row["state"] == "done", row
        assert row["error_count"] == 0
        seen = sim.requests_for(video_id)
        assert row["poll_count"] == len([r for r in seen if r.status != 429])
        assert "error" not in kinds(pg, video_id)


def test_ids_queued_behind_a_429_are_released_not_left_claimed_until_the_lease_ends(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    # One request at a time, each taking 0.3 s: the 429 comes back while the other ids
    # (slots 0.02 s apart) wait in the pool's queue, submitted but not sent.
    head = make_id("ratelimit_1_0.3", 1, user=0)
    others = [make_id("completed_0.3", n) for n in range(2, 5)]
    sim.latency = 0.3
    with tracker(pg_database, sim, TRACKER_POLL_CONCURRENCY="1") as rt:
        enqueue(rt, [head])
        enqueue(rt, others)
        batches = dispatch(rt)
        assert batches[0].items[0][0] == head
        (report,) = run_batches(rt, batches)
        assert [r.video_id for r in sim.requests] == [head]
        throttled_until = control(pg)["throttled_until"]
        got = rows(pg)
        assert report.released == len(others)
        for video_id in others:
            assert got[video_id]["claim_token"] is None, "still claimed: due only at lease end"
            assert got[video_id]["next_poll_at"] == throttled_until


# --- pacing ---------------------------------------------------------------------------------------------


def assert_paced(starts: list[float], rate: float, window: int = 10) -> None:
    ordered = sorted(starts)
    for i in range(len(ordered) - window + 1):
        span = ordered[i + window - 1] - ordered[i]
        mean = span / (window - 1)
        assert mean >= 0.8 / rate, f"requests {i}..{i + window - 1}: mean gap {mean:.3f}s"


def test_due_ids_are_fetched_at_their_slots_not_all_at_once(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = [make_id("completed_0", n) for n in range(30)]
    with tracker(pg_database, sim, TRACKER_RATE_LIMIT="10") as rt:
        enqueue(rt, ids)
        drive(rt, pg, timeout=8)

    requests = sim.requests
    assert len(requests) == 30 and {r.video_id for r in requests} == set(ids)
    assert_paced([r.started for r in requests], rate=10)
    assert requests[-1].started - requests[0].started >= 29 * 0.08


def test_two_workers_share_one_global_rate(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = [make_id("completed_0", n) for n in range(30)]
    failures: list[BaseException] = []

    def worker(rt: Runtime) -> None:
        try:
            drive(rt, pg, timeout=8)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    with (
        tracker(pg_database, sim, TRACKER_RATE_LIMIT="10") as a,
        tracker(pg_database, sim, TRACKER_RATE_LIMIT="10") as b,
    ):
        enqueue(a, ids)
        threads = [threading.Thread(target=worker, args=(rt,)) for rt in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
    assert not failures, failures

    requests = sim.requests
    assert sorted(r.video_id or "" for r in requests) == sorted(ids)  # each id fetched once
    assert_paced([r.started for r in requests], rate=10)


def test_a_batch_that_reaches_its_worker_late_takes_new_slots_instead_of_firing_late(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    """A poll message delayed past its slots (a busy broker, a worker that was full) must not
    send its overdue requests on other requests' slots, nor drop them: they are booked again."""
    ids = [make_id("completed_0", n) for n in range(5)]
    # 5/s: slots 0.2 s apart, so a request sent on a missed slot is told apart from jitter
    with tracker(pg_database, sim, TRACKER_RATE_LIMIT="5") as rt:
        enqueue(rt, ids)
        (batch,) = dispatch(rt)
        offsets = sorted(offset for _, offset in batch.items)
        assert len(offsets) >= 2
        assert offsets[0] >= SLOT_LEAD - 1e-3, "a slot no worker could have used"
        time.sleep(offsets[-2] + 0.1)  # every slot but the last is missed, no lease has ended
        report = poll_batch(rt, batch)

    n = len(offsets)
    assert report.polled == n and report.applied == n and report.released == 0, report
    # every missed slot is booked again; the last one too when this machine is slow to start
    # the batch (0.2 s of margin), which is the same rule at work
    assert n - 1 <= report.reslotted <= n, report
    starts = sorted(r.started for r in sim.requests)
    assert len(starts) == n
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.2 - late_tolerance(0.2), gaps


# --- fencing -------------------------------------------------------------------------------------------


def test_a_batch_with_a_wrong_token_polls_nothing_and_changes_nothing(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = [make_id("completed_0", n) for n in range(3)]
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        (batch,) = dispatch(rt)
        before = rows(pg)
        forged = Batch("0" * 32, batch.start, batch.items)
        report = poll_batch(rt, forged)
        assert (report.polled, report.applied, report.stale) == (0, 0, len(ids))
        assert sim.requests == []
        assert rows(pg) == before

        poll_batch(rt, batch)  # the real one still works
        assert {r["state"] for r in rows(pg).values()} == {"done"}


def test_an_old_batch_rerun_after_its_rows_were_claimed_again_polls_nothing(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = [make_id("completed_0", n) for n in range(3)]
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        (old,) = dispatch(rt)
        # the old worker died: its lease ran out and another dispatch claimed the rows again
        sql(
            pg,
            "UPDATE videos SET claimed_until = now() - interval '1 second', next_poll_at = now() - interval '1 second'",
        )
        (new,) = dispatch(rt)
        assert new.token != old.token and {v for v, _ in new.items} == set(ids)
        before = rows(pg)

        report = poll_batch(rt, old)
        assert (report.polled, report.applied) == (0, 0)
        assert sim.requests == []
        assert rows(pg) == before

        assert poll_batch(rt, new).applied == len(ids)
        after = rows(pg)
        # a duplicate delivery of either message, now, changes nothing either
        assert poll_batch(rt, new).polled == 0
        assert poll_batch(rt, old).polled == 0
        assert rows(pg) == after
    assert len(sim.requests) == len(ids)
    assert all(r["state"] == "done" and r["poll_count"] == 1 for r in after.values())


def test_a_late_answer_from_a_superseded_claim_is_dropped(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    video_id = make_id("completed_0", 1)
    sim.latency = 0.6
    with tracker(pg_database, sim, TRACKER_HTTP_TIMEOUT="1.5") as rt:
        enqueue(rt, [video_id])
        (old,) = dispatch(rt)
        result: list[BatchReport] = []
        thread = threading.Thread(target=lambda: result.append(poll_batch(rt, old)))
        thread.start()
        time.sleep(0.3)  # the old request is in flight now
        sql(pg, "UPDATE videos SET claimed_until = now(), next_poll_at = now()")
        (new,) = dispatch(rt)
        thread.join(5)
        assert result and (result[0].polled, result[0].applied, result[0].stale) == (1, 0, 1)
        row = rows(pg)[video_id]
        assert row["state"] == "pending" and row["claim_token"] == new.token
        assert row["poll_count"] == 0 and row["record"] is None
        assert "done" not in kinds(pg, video_id)

        assert poll_batch(rt, new).applied == 1
    row = rows(pg)[video_id]
    assert row["state"] == "done" and row["poll_count"] == 1
    assert kinds(pg, video_id).count("done") == 1


# --- a result that cannot be stored ---------------------------------------------------------------


def test_an_answer_that_cannot_be_stored_keeps_the_id_claimed_until_its_lease_ends_then_it_completes(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    video_id = make_id("completed_0", 1)
    real_apply = apply
    calls = {"n": 0}

    def flaky_apply(*args: Any, **kwargs: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("UPDATE videos ...", {}, Exception("server closed connection"))
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(answers, "apply", flaky_apply)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [video_id])
        (batch,) = dispatch(rt)
        (report,) = run_batches(rt, [batch])
        assert (report.polled, report.applied, report.failed_to_store) == (1, 0, 1)
        assert [r.status for r in sim.requests] == [200]  # the answer was final, and lost

        row = rows(pg)[video_id]
        assert row["state"] == "pending" and row["claim_token"] == batch.token
        assert row["poll_count"] == 0 and row["record"] is None
        lease_end = row["claimed_until"]
        # held until its slot plus the lease (a dispatch interval and one request's timeouts)
        slot = batch.start + timedelta(seconds=batch.items[0][1])
        assert lease_end == slot + timedelta(seconds=rt.settings.lease)
        assert lease_end > db_now(pg)
        assert row["next_poll_at"] == lease_end

        # not claimed again while the lease holds
        for _ in range(5):
            assert dispatch(rt) == []
            time.sleep(0.1)
        assert len(sim.requests) == 1

        drive(rt, pg, timeout=7)
    row = rows(pg)[video_id]
    assert row["state"] == "done" and row["status_name"] == "COMPLETED"
    assert row["poll_count"] == 1 and row["error_count"] == 0
    assert row["done_at"] >= lease_end
    lease = rt.settings.lease
    assert len(sim.requests) == 2
    assert sim.requests[1].started > sim.requests[0].started + lease - 0.5
    assert kinds(pg, video_id).count("done") == 1


# --- the database's clock -----------------------------------------------------------------------------


class _SkewedDatetime(datetime):
    """A worker whose wall clock is two hours fast."""

    SKEW = timedelta(hours=2)

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.now(tz) + cls.SKEW


class _SkewedTime:
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)
    perf_counter = staticmethod(time.perf_counter)

    @staticmethod
    def time() -> float:
        return time.time() + 7200


def test_every_time_the_poller_writes_is_in_database_time(
    pg: sessionmaker[Session],
    pg_database: str,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in (
        answers,
        batch_state,
        dispatch_module,
        batch_module,
        decide,
        timing,
        limiter,
        db_claim,
        db_videos,
        service_claim,
        service_limiter,
    ):
        monkeypatch.setattr(module, "datetime", _SkewedDatetime)
    for module in (batch_module, batch_state, job_queue):
        monkeypatch.setattr(module, "time", _SkewedTime)
    done_id = make_id("completed_0", 1)
    waiting_id = make_id("never", 2)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [done_id, waiting_id])
        run_batches(rt, dispatch(rt))
        now = db_now(pg)

    second = timedelta(seconds=1)
    done, waiting = rows(pg)[done_id], rows(pg)[waiting_id]
    assert done["state"] == "done" and waiting["state"] == "pending"
    for row in (done, waiting):
        for column in ("enqueued_at", "updated_at", "last_polled_at"):
            assert now - second <= row[column] <= now, (column, row[column], now)
    assert now - second <= done["done_at"] <= now
    gap = (waiting["next_poll_at"] - waiting["last_polled_at"]).total_seconds()
    assert 0.3 - 1e-3 <= gap <= 1.0 + 1e-3  # within [MIN, MAX]
    assert waiting["next_poll_at"] <= now + second
    for e in events(pg, done_id) + events(pg, waiting_id):
        assert now - second <= e["at"] <= now, e
    ctl = control(pg)
    assert now - second <= ctl["last_dispatch_at"] <= now
    assert now - second <= ctl["next_slot_at"] <= now + second

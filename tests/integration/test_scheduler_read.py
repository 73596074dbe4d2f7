"""The token-wide scheduler read end to end, Celery-free: scheduler_read.read + dispatch +
poll_batch against real Postgres and the in-process simulator, timings compressed.

What a user would notice: an id the scheduler lists costs no request of its own, an id that
leaves it is known to be finished within a read or two, and a broken scheduler changes
nothing but the cost (the ids fall back to the by-id schedule, under the cap).

The compressed timings (cap 2 s, reads every 0.5 s) keep each test to seconds; the production
defaults (cap 15 s, reads every 3 s) are what tests/e2e/test_latency.py runs.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.db.scheduler import scheduler_answered
from pixverse_tracker.rules.decide import decide
from pixverse_tracker.rules.outcomes import NotYet
from pixverse_tracker.rules.row import RowView
from pixverse_tracker.service import scheduler_read
from pixverse_tracker.service.apply import apply
from pixverse_tracker.service.dispatch import dispatch
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.testing import Simulator, make_id
from tests.integration.test_poller import (
    BASE_ENV,
    control,
    db_now,
    enqueue,
    kinds,
    pending_count,
    rows,
    run_batches,
    sql,
)
from tests.integration.test_poller import tracker as by_id_tracker

TOKEN = BASE_ENV["USEAPI_TOKEN"]
SCHEDULER_ON = {
    "TRACKER_SCHEDULER": "true",
    "TRACKER_SCHEDULER_INTERVAL": "0.5",
    "TRACKER_FIRST_POLL_DELAY": "0.6",
    "TRACKER_POLL_INTERVAL_MAX": "2",
}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN, default_delay=0.5) as simulator:
        yield simulator


@contextmanager
def tracker(pg_database: str, sim: Simulator, **overrides: str) -> Iterator[Runtime]:
    with by_id_tracker(pg_database, sim, **{**SCHEDULER_ON, **overrides}) as rt:
        yield rt


def drive(
    rt: Runtime,
    pg: sessionmaker[Session],
    *,
    timeout: float,
    until: Callable[[], bool] | None = None,
) -> None:
    """What beat and the workers do, in one thread: the scheduler read, dispatch, polls."""
    finished = until or (lambda: pending_count(pg) == 0)
    deadline = time.monotonic() + timeout
    while not finished():
        assert time.monotonic() < deadline, f"still pending after {timeout}s: {rows(pg)}"
        batches = scheduler_read.read(rt) + dispatch(rt)
        run_batches(rt, batches)
        if not batches:
            time.sleep(0.02)


def by_id(sim: Simulator, video_id: str) -> int:
    return len(sim.requests_for(video_id))


def test_a_listed_id_costs_no_request_until_it_leaves_the_scheduler_then_one(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    video_id = make_id("completed_3", 1)
    sim.create(video_id)  # started through the API: executing for 3 s
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=12)

    row = rows(pg)[video_id]
    assert row["state"] == "done" and row["status_name"] == "COMPLETED"
    # no look by id while it executed (reads every 0.5 s, cap 2 s): one fetch once it left
    assert by_id(sim, video_id) == 1
    reads = sim.scheduler_requests()
    assert reads and all(r.status == 200 for r in reads)
    last_listed = max(r.at for r in reads if video_id in r.ids)
    first_unlisted = min(r.at for r in reads if r.at > last_listed)
    fetch = sim.requests_for(video_id)[0]
    # the fetch follows the read that found it gone at once (a slot, not a dispatch tick)
    assert fetch.started - first_unlisted < 0.5
    history = kinds(pg, video_id)
    assert history.index("unscheduled") < history.index("done")
    assert row["scheduler_seen_at"] is None


def test_a_video_made_on_the_website_is_tracked_by_id_under_the_cap(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    video_id = make_id("completed_5", 1)
    sim.create(video_id, scheduled=False)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=12)
    assert rows(pg)[video_id]["state"] == "done"
    starts = [r.started for r in sim.requests_for(video_id)]
    assert len(starts) >= 2  # looked at by id while it generated: nobody else answered for it
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) <= 2.0 + 0.5  # the cap (2 s here), plus the claim's slot and a margin
    assert all(video_id not in r.ids for r in sim.scheduler_requests())


@pytest.mark.parametrize("fault", [500, 404, "garbage", "object"])
def test_a_broken_scheduler_changes_nothing_but_the_cost(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator, fault: int | str
) -> None:
    video_id = make_id("completed_5", 1)
    sim.create(video_id)
    sim.fail_scheduler(fault)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=12)
        state = control(pg)
    assert rows(pg)[video_id]["state"] == "done"
    assert state["scheduler_failures"] >= 1 and state["scheduler_error"]
    assert state["auth_paused_until"] is None and state["throttled_until"] is None
    starts = [r.started for r in sim.requests_for(video_id)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 2 and max(gaps) <= 2.5  # by id, under the cap, as if it were off
    # failed reads back off: 0.5 s, then 1, 2, 4 ... instead of every 0.5 s
    reads = [r.at for r in sim.scheduler_requests()]
    assert len(reads) <= 5, reads


def test_reads_resume_at_the_interval_after_the_scheduler_heals(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    video_id = make_id("never", 1)
    sim.create(video_id)
    sim.fail_scheduler(503)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=1.2, until=lambda: len(sim.scheduler_requests()) >= 2)
        sim.fail_scheduler(None)
        drive(rt, pg, timeout=5, until=lambda: control(pg)["scheduler_failures"] == 0)
        ok = control(pg)["scheduler_ok_at"]
        drive(rt, pg, timeout=3, until=lambda: control(pg)["scheduler_ok_at"] > ok)
    assert control(pg)["scheduler_executing"] == 1


def test_a_401_from_the_scheduler_pauses_polling_like_any_401(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    sim.create(make_id("never", 1))
    sim.fail_scheduler(401)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [make_id("never", 1)])
        drive(rt, pg, timeout=3, until=lambda: bool(sim.scheduler_requests()))
        state = control(pg)
    assert state["auth_failing"] is True and state["auth_paused_until"] > db_now(pg)


def test_a_429_from_the_scheduler_slows_everyone(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    sim.create(make_id("never", 1))
    sim.fail_scheduler(429)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [make_id("never", 1)])
        drive(rt, pg, timeout=3, until=lambda: bool(sim.scheduler_requests()))
        state = control(pg)
    assert state["rate_factor"] < 1.0 and state["throttled_until"] > db_now(pg)


@pytest.mark.parametrize("shape", ["id", "videoId", "video_id"])
def test_every_documented_item_shape_is_read(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator, shape: str
) -> None:
    sim.scheduler_shape = shape
    video_id = make_id("never", 1)
    sim.create(video_id)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=3, until=lambda: control(pg)["scheduler_ok_at"] is not None)
    assert rows(pg)[video_id]["scheduler_seen_at"] is not None
    assert control(pg)["scheduler_executing"] == 1


def test_nothing_is_read_while_nothing_is_pending(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    with tracker(pg_database, sim) as rt:
        for _ in range(5):
            assert scheduler_read.read(rt) == []
            time.sleep(0.12)
    assert sim.scheduler_requests() == []


def test_the_scheduler_can_be_turned_off(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    video_id = make_id("completed_1", 1)
    sim.create(video_id)
    with tracker(pg_database, sim, TRACKER_SCHEDULER="false") as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=6)
    assert sim.scheduler_requests() == []
    assert rows(pg)[video_id]["state"] == "done"


# --- the SQL of one answer (scheduler_answered) -----------------------------------------


def test_an_answer_with_items_without_an_id_takes_nobody_as_gone(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = [make_id("never", n) for n in (1, 2)]
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        with pg.begin() as session:
            scheduler_answered(session, ids, complete=True, defer=15)
        with pg.begin() as session:
            # one item had no usable id: it may be ours, so nobody has left
            result = scheduler_answered(session, [ids[0]], complete=False, defer=15)
        assert result.gone == [] and result.listed == 1
        with pg.begin() as session:
            result = scheduler_answered(session, [ids[0]], complete=True, defer=15)
        assert result.gone == [ids[1]]
    got = rows(pg)
    assert got[ids[1]]["scheduler_seen_at"] is None
    assert got[ids[1]]["next_poll_at"] <= db_now(pg)  # due at once
    assert got[ids[0]]["scheduler_seen_at"] is not None


def test_a_listed_row_is_rewritten_only_when_its_next_look_comes_near(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    video_id = make_id("never", 1)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [video_id])
        with pg.begin() as session:
            first = scheduler_answered(session, [video_id], complete=True, defer=15)
        deferred = rows(pg)[video_id]["next_poll_at"]
        assert deferred == first.now + timedelta(seconds=15)
        with pg.begin() as session:
            scheduler_answered(session, [video_id], complete=True, defer=15)
        # the next look is still 15 s away: no new row version for a read that changes nothing
        assert rows(pg)[video_id]["next_poll_at"] == deferred
        sql(pg, "UPDATE videos SET next_poll_at = now() + interval '5 seconds'")
        with pg.begin() as session:
            again = scheduler_answered(session, [video_id], complete=True, defer=15)
        assert rows(pg)[video_id]["next_poll_at"] == again.now + timedelta(seconds=15)


def test_an_id_that_leaves_while_its_poll_is_in_flight_is_looked_at_again_at_once(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    video_id = make_id("never", 1)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [video_id])
        with pg.begin() as session:
            scheduler_answered(session, [video_id], complete=True, defer=15)
        sql(pg, "UPDATE videos SET next_poll_at = now()")
        (batch,) = dispatch(rt)
        sent_at = db_now(pg)  # the request goes out ...
        with pg.begin() as session:  # ... and the video finishes and leaves meanwhile
            result = scheduler_answered(session, [], complete=True, defer=15)
        assert result.gone == [video_id]
        lease_end = rows(pg)[video_id]["next_poll_at"]
        assert lease_end > db_now(pg)  # a claimed row keeps its claim
        row = RowView(video_id, rows(pg)[video_id]["enqueued_at"])
        decision = decide(row, NotYet(), db_now(pg), rt.policy, random.Random(1))
        with pg.begin() as session:
            assert apply(session, video_id, batch.token, decision, None, sent_at)
    # "not yet" was sent before it left: looked at again at once, not after the cap
    assert rows(pg)[video_id]["next_poll_at"] <= db_now(pg)

"""The list endpoint end to end, Celery-free: dispatch + poll_batch against real Postgres and the
in-process simulator, timings compressed to fractions of a second.

One request to ``GET /v2/pixverse/videos/?email=`` answers for every id of an account on its
pages; these tests check what a user would notice: the rows, their events, and how many
requests of which kind the upstream was sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.db.reports import done_event_counts
from pixverse_tracker.service.dispatch import dispatch
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.testing import Simulator
from tests.integration.test_poller import (
    BASE_ENV,
    control,
    drive,
    enqueue,
    events,
    kinds,
    rows,
    run_batches,
    sql,
)
from tests.integration.test_poller import tracker as by_id_tracker

TOKEN = BASE_ENV["USEAPI_TOKEN"]
LIST_ON = {"TRACKER_LIST": "true", "TRACKER_LIST_INTERVAL": "0.3"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN, default_delay=0.5) as simulator:
        yield simulator


@contextmanager
def tracker(pg_database: str, sim: Simulator, **overrides: str) -> Iterator[Runtime]:
    with by_id_tracker(pg_database, sim, **{**LIST_ON, **overrides}) as rt:
        yield rt


def until_listed(rt: Runtime, pg: sessionmaker[Session], sim: Simulator) -> None:
    """Dispatch and poll until the first list read has been answered."""
    drive(rt, pg, timeout=4, until=lambda: bool(sim.list_requests()))


def until_pages_known(rt: Runtime, pg: sessionmaker[Session]) -> None:
    """Dispatch and poll until a list read has shown every tracked id (its page is known)."""
    drive(
        rt,
        pg,
        timeout=10,
        until=lambda: all(r["list_offset"] is not None for r in rows(pg).values()),
    )


def vid(n: int, account: str = "team") -> str:
    return f"user:1-pixverse:{account}@example.com-video:{n}"


def created(sim: Simulator, scenario: str, ids: list[str]) -> list[str]:
    """Videos as useapi.net would have them right after POST /videos/create."""
    for video_id in ids:
        sim.script(video_id, scenario)
    sim.create_many(ids)
    return ids


def video_requests(sim: Simulator, video_id: str) -> int:
    return len(sim.requests_for(video_id))


def test_one_list_request_answers_for_every_id_of_an_account(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    # Queued for 0.3 s, then generating until 2.5 s. The look after a QUEUED answer comes up to
    # TRACKER_POLL_INTERVAL_MAX (1 s) later, snapped back onto the 0.3 s grid (0.9 s after a
    # look on the grid, plus dispatch lag). A first look just before 0.3 s therefore lands its
    # second one at ~1.2 s or later: the generating phase must outlast that by a wide margin,
    # or the history may rightly read QUEUED, COMPLETED (it did at 1.2 s, about 1 run in 5).
    ids = created(sim, "queued_0.3_2.5", [vid(n) for n in range(1, 9)])
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        drive(rt, pg, timeout=8)

    got = rows(pg)
    for video_id in ids:
        row = got[video_id]
        assert (row["state"], row["status_name"]) == ("done", "COMPLETED"), row
        assert row["url"].endswith(".mp4") and row["record"]["video_id"] == video_id
        # the full record was on the page: nothing was fetched by id
        assert video_requests(sim, video_id) == 0
        # the way there is in the history: QUEUED, then GENERATING (remembered as the start)
        statuses = [e["status_name"] for e in events(pg, video_id) if e["kind"] == "status"]
        assert statuses[:2] == ["QUEUED", "GENERATING"] or statuses[:1] == ["GENERATING"]
        assert row["started_at"] is not None and row["started_at"] <= row["done_at"]
    lists = sim.list_requests("team@example.com")
    # 8 ids over ~2.5 s, a look every 0.9 s: a handful of list reads, not one request per id per look
    assert 2 <= len(lists) <= 12, len(lists)
    assert all(r.status == 200 for r in lists)
    with pg() as session:
        assert done_event_counts(session) == dict.fromkeys(ids, 1)


def test_brief_list_entries_are_fetched_by_id_once_finished(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    sim.list_shape = "brief"
    ids = created(sim, "completed_0.6", [vid(n) for n in range(1, 5)])
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        drive(rt, pg, timeout=8)

    got = rows(pg)
    for video_id in ids:
        assert got[video_id]["state"] == "done"
        # the whole record, from the single-video endpoint, asked for exactly once
        assert "template_name" in got[video_id]["record"]
        assert [r.status for r in sim.requests_for(video_id)] == [200]


@pytest.mark.parametrize("paging", ["plain", "paged"])
def test_both_readings_of_the_list_page_are_followed_to_later_pages(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator, paging: str
) -> None:
    sim.list_paging = paging
    # 6 videos, 2 per page: the oldest two are on the third page
    ids = created(sim, "completed_0.5", [vid(n) for n in range(1, 7)])
    with tracker(pg_database, sim, TRACKER_LIST_PAGE_SIZE="2") as rt:
        enqueue(rt, ids)
        drive(rt, pg, timeout=8)
    got = rows(pg)
    assert all(got[v]["state"] == "done" for v in ids)
    assert sum(video_requests(sim, v) for v in ids) == 0
    offsets = {r.path.rsplit("offset=", 1)[-1] for r in sim.list_requests()}
    assert {"0", "2", "4"} <= offsets, offsets


def test_ids_the_pages_do_not_show_are_fetched_by_id_and_stay_so_for_a_while(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    listed = created(sim, "never", [vid(n) for n in range(1, 4)])
    unknown = vid(99)  # never created: the upstream's list does not know it (yet)
    sim.script(unknown, "completed_5")
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [*listed, unknown])
        drive(rt, pg, timeout=4, until=lambda: video_requests(sim, unknown) > 0)
        missed = rows(pg)[unknown]
        assert missed["list_missed_at"] is not None and missed["poll_count"] == 1
        # from now on it is fetched by id while its siblings share their list reads
        sql(pg, "UPDATE videos SET next_poll_at = now()")
        batches = dispatch(rt)
    assert [v for b in batches for v, _ in b.items] == [unknown]
    assert sorted(v for b in batches for _, _, ids, _ in b.lists for v in ids) == sorted(listed)
    assert all(video_requests(sim, v) == 0 for v in listed)


def test_a_finished_video_on_a_page_is_answered_even_if_not_due(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    soon, later = created(sim, "completed_0.2", [vid(1), vid(2)])
    with tracker(pg_database, sim) as rt:
        enqueue(rt, [soon, later])
        # one of them would not be looked at for a minute
        sql(
            pg,
            "UPDATE videos SET next_poll_at = now() + interval '60 seconds' WHERE video_id = :v",
            v=later,
        )
        sim.script(soon, "never")  # keeps the list reads coming
        deadline = time.monotonic() + 6
        while rows(pg)[later]["state"] == "pending":
            assert time.monotonic() < deadline, rows(pg)[later]
            run_batches(rt, dispatch(rt))
            time.sleep(0.02)

    row = rows(pg)[later]
    assert row["state"] == "done" and row["status_name"] == "COMPLETED"
    assert video_requests(sim, later) == 0
    assert kinds(pg, later).count("done") == 1


def test_a_failed_adoption_costs_only_the_head_start(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    soon, later = created(sim, "completed_0.2", [vid(1), vid(2)])
    sim.script(soon, "never")  # stays in progress: the list reads keep coming for it
    # A real database error, for the adoption only: a trigger refuses to claim ``later``,
    # which nothing else claims while its own next poll is a minute away.
    sql(
        pg,
        "CREATE FUNCTION refuse_later() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'adoption refused for the test'; END $$",
    )
    sql(
        pg,
        "CREATE TRIGGER refuse_later BEFORE UPDATE OF claim_token ON videos FOR EACH ROW "
        "WHEN (NEW.video_id = '" + later + "' AND NEW.claim_token IS NOT NULL) "
        "EXECUTE FUNCTION refuse_later()",
    )
    try:
        with tracker(pg_database, sim) as rt:
            enqueue(rt, [soon, later])
            sql(
                pg,
                "UPDATE videos SET next_poll_at = now() + interval '60 seconds' "
                "WHERE video_id = :v",
                v=later,
            )
            time.sleep(0.3)  # ``later`` has finished upstream: every page now shows it so
            drive(rt, pg, timeout=4, until=lambda: len(sim.list_requests()) >= 3)
    finally:
        sql(pg, "DROP TRIGGER IF EXISTS refuse_later ON videos")
        sql(pg, "DROP FUNCTION IF EXISTS refuse_later()")

    assert "adopt_failed" in caplog.text  # the fault did happen
    got = rows(pg)
    # the page's claimed id was answered every time, not left claimed until its lease ran out
    assert got[soon]["poll_count"] >= 2 and got[soon]["claim_token"] is None
    # the adoption changed nothing: ``later`` waits, unharmed, for its own poll
    assert got[later]["state"] == "pending" and got[later]["claim_token"] is None
    assert got[later]["error_count"] == 0 and video_requests(sim, later) == 0


def test_a_list_that_fails_for_an_account_falls_back_to_fetches_by_id(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = created(sim, "completed_0.4", [vid(n) for n in range(1, 4)])
    sim.fail_lists(400)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        drive(rt, pg, timeout=8)

    got = rows(pg)
    assert all(got[v]["state"] == "done" for v in ids)
    assert all(got[v]["list_missed_at"] is not None for v in ids)
    assert all(got[v]["error_count"] == 0 for v in ids)  # not the videos' fault
    # one refused list read, then each id by its own requests
    assert [r.status for r in sim.list_requests()] == [400]
    assert all(video_requests(sim, v) >= 1 for v in ids)


def test_a_list_outage_counts_an_error_for_each_id_and_they_recover(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = created(sim, "completed_0.4", [vid(n) for n in range(1, 4)])
    sim.fail_lists(503)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        until_listed(rt, pg, sim)
        time.sleep(0.2)
        sim.fail_lists(None)
        drive(rt, pg, timeout=8)

    got = rows(pg)
    for video_id in ids:
        assert got[video_id]["state"] == "done"
        assert got[video_id]["error_count"] >= 1
        assert "error" in kinds(pg, video_id)
        assert got[video_id]["list_missed_at"] is None  # an outage is not a miss


def test_a_401_on_a_list_read_pauses_polling_and_penalises_nobody(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = created(sim, "completed_0.3", [vid(n) for n in range(1, 4)])
    sim.token = "revoked"
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        until_listed(rt, pg, sim)
        ctl = control(pg)
        assert ctl["auth_failing"] is True and ctl["auth_paused_until"] is not None
        for video_id, row in rows(pg).items():
            assert row["claim_token"] is None, "released, not left claimed"
            assert (row["poll_count"], row["error_count"]) == (0, 0), video_id
        sim.token = TOKEN
        drive(rt, pg, timeout=10)

    assert all(r["state"] == "done" for r in rows(pg).values())
    assert control(pg)["auth_failing"] is False


def test_a_429_on_a_list_read_slows_everything_down_without_penalty(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = created(sim, "completed_0.3", [vid(n) for n in range(1, 4)])
    sim.fail_lists(429)
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        until_listed(rt, pg, sim)
        ctl = control(pg)
        assert ctl["throttled_until"] is not None and ctl["rate_factor"] < 1
        sim.fail_lists(None)
        drive(rt, pg, timeout=10)

    for row in rows(pg).values():
        assert row["state"] == "done" and row["error_count"] == 0


def test_ids_of_two_accounts_and_an_image_take_three_requests_in_one_dispatch(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    image = "user:1-pixverse:team@example.com-image:7"
    ids = [vid(1), vid(2), vid(3), vid(1, "other"), vid(2, "other"), image]
    with tracker(pg_database, sim, TRACKER_FIRST_POLL_DELAY="0") as rt:
        enqueue(rt, ids)
        sql(pg, "UPDATE videos SET next_poll_at = now()")
        batches = dispatch(rt)
    lists = sorted((a, sorted(v)) for b in batches for a, _, v, _ in b.lists)
    assert lists == [
        ("other@example.com", sorted([vid(1, "other"), vid(2, "other")])),
        ("team@example.com", sorted([vid(1), vid(2), vid(3)])),
    ]
    assert [v for b in batches for v, _ in b.items] == [image]


def test_first_polls_of_one_account_land_on_its_grid(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    with tracker(pg_database, sim, TRACKER_FIRST_POLL_DELAY="1") as rt:
        enqueue(rt, [vid(1), vid(2)])
        time.sleep(0.1)
        enqueue(rt, [vid(3)])
    got = rows(pg)
    first, second, third = (got[vid(n)]["next_poll_at"] for n in (1, 2, 3))
    assert first == second
    # a later enqueue joins the same instants: one list read answers for all three
    steps = (third - first).total_seconds() / 0.3
    assert abs(steps - round(steps)) < 1e-3, steps
    for row in got.values():
        assert row["next_poll_at"] >= row["enqueued_at"] + timedelta(seconds=1)
        assert row["next_poll_at"] < row["enqueued_at"] + timedelta(seconds=1.3)


def test_a_burst_deeper_than_the_page_limit_is_read_on_the_list_and_then_page_by_page(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    # 200 videos of one account fill 5 pages of 40 (the default page size), deeper than the
    # default TRACKER_LIST_MAX_PAGES (3): the first read follows the pages down to the last
    # id instead of fetching the 80 deepest by id, and remembers each id's page.
    ids = created(sim, "never", [vid(n) for n in range(1, 201)])
    with tracker(pg_database, sim) as rt:
        assert (rt.settings.list_page_size, rt.settings.list_max_pages) == (40, 3)
        enqueue(rt, ids)
        until_pages_known(rt, pg)
        assert sum(video_requests(sim, v) for v in ids) == 0
        offsets = {v: r["list_offset"] for v, r in rows(pg).items()}
        # newest first: video 200 is on the first page, video 1 on the fifth
        assert (offsets[vid(200)], offsets[vid(1)]) == (0, 160)
        assert sorted(set(offsets.values())) == [0, 40, 80, 120, 160]

        # The next look claims one read per page, each starting where its ids are, side by
        # side: five requests, no chain from the top, nothing by id.
        sql(pg, "UPDATE videos SET next_poll_at = now()")
        before = len(sim.list_requests())
        batches = dispatch(rt)
        reads = sorted((o, len(v)) for b in batches for _, _, v, o in b.lists)
        assert reads == [(0, 40), (40, 40), (80, 40), (120, 40), (160, 40)]
        assert not [v for b in batches for v, _ in b.items]
        run_batches(rt, batches)
    new = sim.list_requests()[before:]
    assert sorted(int(r.path.rsplit("offset=", 1)[-1]) for r in new) == [0, 40, 80, 120, 160]
    assert sum(video_requests(sim, v) for v in ids) == 0
    assert all(r["poll_count"] >= 2 for r in rows(pg).values())


def test_an_id_pushed_down_by_newer_videos_is_found_on_a_later_page(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    ids = created(sim, "never", [vid(n) for n in range(1, 41)])  # exactly one page
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        until_pages_known(rt, pg)
        # 10 videos made since (on the website, not tracked) push the oldest 10 to page 2
        created(sim, "never", [vid(n) for n in range(1000, 1010)])
        sql(pg, "UPDATE videos SET next_poll_at = now()")
        run_batches(rt, dispatch(rt))
    got = rows(pg)
    assert {got[vid(n)]["list_offset"] for n in range(1, 11)} == {40}
    assert {got[vid(n)]["list_offset"] for n in range(11, 41)} == {0}
    assert sum(video_requests(sim, v) for v in ids) == 0


def test_one_deep_id_due_reads_down_to_it_and_teaches_the_whole_burst_its_pages(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator
) -> None:
    # Only the oldest of 200 is due (the scheduler holds the rest as executing, say). It is on
    # the fifth page, past the 3 a small read goes (TRACKER_LIST_MAX_PAGES): the pages above it
    # hold videos of ours, so the read goes on down to it rather than fetching it by id.
    ids = created(sim, "never", [vid(n) for n in range(1, 201)])
    with tracker(pg_database, sim) as rt:
        enqueue(rt, ids)
        sql(pg, "UPDATE videos SET next_poll_at = now() + interval '1 hour'")
        sql(pg, "UPDATE videos SET next_poll_at = now() WHERE video_id = :v", v=vid(1))
        run_batches(rt, dispatch(rt))
    got = rows(pg)
    assert video_requests(sim, vid(1)) == 0 and got[vid(1)]["poll_count"] == 1
    assert got[vid(1)]["list_missed_at"] is None
    # every one of the 200 now knows its page, though only one was asked about
    assert {v: r["list_offset"] for v, r in got.items()} == {
        vid(n): (200 - n) // 40 * 40 for n in range(1, 201)
    }
    assert len(sim.list_requests()) == 5

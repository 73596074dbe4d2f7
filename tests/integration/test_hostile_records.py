"""Hostile records end to end (issue 11), Celery-free: dispatch + poll_batch against real
Postgres and the simulator's hostile scenarios.

A record nested absurdly deep, a record echoing the token, a COMPLETED video whose url is not
https, and an answer that raises while it is applied: each must end in the right state with
nothing stored or queued for the application that nobody may read, and cost the upstream no
more than the schedule allows.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.rules.decide import decide as real_decide
from pixverse_tracker.rules.outcomes import Record
from pixverse_tracker.rules.records import MAX_DEPTH, PRUNED, REDACTED
from pixverse_tracker.rules.row import RowView
from pixverse_tracker.service import answers
from pixverse_tracker.testing import Simulator, make_id
from tests.integration.test_poller import BASE_ENV, drive, enqueue, kinds, rows, sql, tracker

TOKEN = BASE_ENV["USEAPI_TOKEN"]
# A host name, never resolved here: the outbox row is written when the row finishes, and
# these tests read it from the table rather than deliver it.
HOOK = {"TRACKER_WEBHOOK_URL": "https://hooks.example.com/tracker"}
LIST_ON = {"TRACKER_LIST": "true", "TRACKER_LIST_INTERVAL": "0.3"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN, default_delay=0.5) as simulator:
        yield simulator


def outbox(pg: sessionmaker[Session]) -> list[dict[str, Any]]:
    with pg() as session:
        found = session.execute(text("SELECT * FROM webhook_outbox ORDER BY id")).mappings()
        return [dict(r) for r in found]


def dump(pg: sessionmaker[Session]) -> str:
    """Every row of every table the tracker writes, as text."""
    with pg() as session:
        return "\n".join(
            str(session.execute(text(f"SELECT json_agg(t)::text FROM {table} t")).scalar_one())
            for table in ("videos", "video_events", "webhook_outbox", "tracker_control")
        )


def finished(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator, scenario: str, n: int, path: str
) -> str:
    """Track one video playing ``scenario`` to its end, fetched by id or answered by its
    account's list (a video the list shows from the start), with a webhook URL set."""
    if path == "through the list":
        video_id = f"user:1-pixverse:team@example.com-video:{n}"
        sim.script(video_id, scenario)
        sim.create(video_id)
        overrides = {**HOOK, **LIST_ON}
    else:
        video_id, overrides = make_id(scenario, n), HOOK
    with tracker(pg_database, sim, **overrides) as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=5)
    return video_id


# --- a record nested absurdly deep ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["by id", "through the list"])
def test_a_completed_record_nested_500_levels_deep_is_done_with_the_subtree_pruned(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator, path: str
) -> None:
    video_id = finished(pg, pg_database, sim, "deep_0", 1, path)
    row = rows(pg)[video_id]
    assert row["state"] == "done" and row["status_name"] == "COMPLETED"
    assert row["url"] == "https://media.example/1.mp4"
    assert row["error_count"] == 0 and row["poll_count"] == 1
    value = row["record"]["nested"]
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == PRUNED
    (delivery,) = outbox(pg)
    body = json.loads(delivery["body"])
    assert (
        body["event"] == "video.done"
        and body["video"]["record"]["nested"] == row["record"]["nested"]
    )
    if path == "through the list":  # the list's entry was the record: no request by id
        assert sim.requests_for(video_id) == []
    else:
        assert len(sim.requests_for(video_id)) == 1


# --- a record that echoes the token ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["by id", "through the list"])
def test_a_record_echoing_the_token_is_stored_and_queued_with_redacted_in_its_place(
    pg: sessionmaker[Session], pg_database: str, sim: Simulator, path: str
) -> None:
    video_id = finished(pg, pg_database, sim, "echo_0", 2, path)
    row = rows(pg)[video_id]
    assert row["state"] == "done"
    assert row["prompt"] == f"a cat, and the token {REDACTED}"
    assert row["record"]["debug"] == {
        "authorization": f"Bearer {REDACTED}",
        f"seen-{REDACTED}": [REDACTED],
    }
    assert row["first_frame"] == f"https://media.example/2.jpg?t={REDACTED}"
    everything = dump(pg)
    assert outbox(pg), "the webhook body was queued"
    assert TOKEN not in everything and quote(TOKEN, safe="") not in everything


# --- a COMPLETED video whose url is not https ---------------------------------------------------------


def test_a_completed_video_whose_url_is_not_https_is_kept_logged_polled_and_expires_at_the_deadline(
    pg: sessionmaker[Session],
    pg_database: str,
    sim: Simulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tracker.poll")
    video_id = make_id("badurl_0", 3)
    # compressed: the deadline comes after a handful of polls (the default is 6 hours)
    with tracker(pg_database, sim, TRACKER_GIVE_UP_AFTER="2.5", **HOOK) as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=8)
    row = rows(pg)[video_id]
    assert row["state"] == "abandoned" and row["abandon_reason"].startswith("expired")
    assert row["url"] is None and row["status_name"] == "COMPLETED"
    assert row["record"]["url"] in ("javascript:alert(1)", "http://media.example/plain.mp4",
                                    "data:video/mp4;base64,AAAA")  # fmt: skip
    assert len(sim.requests_for(video_id)) >= 3  # polled on until the deadline
    assert "anomaly" in kinds(pg, video_id) and "done" not in kinds(pg, video_id)
    anomalies = [r for r in caplog.records if getattr(r, "action", None) == "anomaly"]
    assert anomalies and all("not https" in str(r.__dict__["fields"]) for r in anomalies)
    (delivery,) = outbox(pg)
    body = json.loads(delivery["body"])
    assert body["event"] == "video.abandoned" and body["video"]["url"] is None


# --- an answer that raises while it is applied --------------------------------------------------------


@pytest.fixture
def refusing_trigger(pg: sessionmaker[Session]) -> Iterator[str]:
    """A video whose record the database refuses, as it would a value it cannot hold."""
    video_id = make_id("completed_0", 4)
    sql(
        pg,
        f"""
        CREATE FUNCTION refuse_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.video_id = '{video_id}' AND NEW.record IS NOT NULL THEN
            RAISE EXCEPTION 'record refused';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_record BEFORE UPDATE ON videos
          FOR EACH ROW EXECUTE FUNCTION refuse_record();
        """,
    )
    try:
        yield video_id
    finally:
        sql(pg, "DROP TRIGGER refuse_record ON videos; DROP FUNCTION refuse_record()")


def _raising_decide(video_id: str) -> Any:
    def decide(row: RowView, outcome: Any, *args: Any, **kwargs: Any) -> Any:
        if row.video_id == video_id and isinstance(outcome, Record):
            raise RecursionError("maximum recursion depth exceeded while calling a Python object")
        return real_decide(row, outcome, *args, **kwargs)

    return decide


@pytest.mark.parametrize("where", ["the database refuses the write", "the rules raise"])
def test_an_answer_that_raises_while_applied_backs_off_and_expires_with_one_log_line_per_poll(
    pg: sessionmaker[Session],
    pg_database: str,
    sim: Simulator,
    refusing_trigger: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    caplog.set_level(logging.INFO, logger="tracker.poll")
    if where == "the rules raise":
        # a stand-in for a bug nobody has found yet, as the deep record once was
        video_id = make_id("completed_0", 5)
        monkeypatch.setattr(answers, "decide", _raising_decide(video_id))
    else:
        video_id = refusing_trigger
    with tracker(pg_database, sim, TRACKER_GIVE_UP_AFTER="2.5") as rt:
        enqueue(rt, [video_id])
        drive(rt, pg, timeout=8)
    row = rows(pg)[video_id]
    assert row["state"] == "abandoned"
    assert row["abandon_reason"].startswith("expired: no answer could be applied")
    polls = sim.requests_for(video_id)
    assert 2 <= len(polls) <= 2.5 / rt.settings.poll_interval_min + 2
    assert row["error_count"] == len(polls) and row["poll_count"] == 0
    # never due again at once: each poll after the first waited at least the backoff floor
    floor = rt.settings.poll_interval_min * (1 - rt.settings.poll_jitter)
    starts = [r.started for r in polls]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # the last one may come sooner: it lands at the deadline
    assert all(gap >= floor - 0.05 for gap in gaps[:-1]), gaps
    assert kinds(pg, video_id).count("error") == len(polls)
    lines = [r for r in caplog.records if getattr(r, "action", None) == "answer_not_applied"]
    assert len(lines) == len(polls)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert all("\n" not in r.getMessage() for r in lines)

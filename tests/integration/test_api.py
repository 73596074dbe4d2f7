"""The Python API applications use: get, completed_since (keyset paging), wait_for."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker import api
from pixverse_tracker.db.claim import owned_rows
from pixverse_tracker.db.sql import current_time
from pixverse_tracker.models import Video
from pixverse_tracker.rules import decide
from pixverse_tracker.rules.outcomes import NotYet, Record
from pixverse_tracker.service.apply import apply
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import load


def vid(n: int) -> str:
    return f"user:5-pixverse:api@example.com-video:{n}"


@pytest.fixture
def rt(pg: sessionmaker[Session], pg_database: str) -> Iterator[Runtime]:
    runtime = Runtime(load({"DATABASE_URL": pg_database, "TRACKER_FIRST_POLL_DELAY": "0"}))
    yield runtime
    runtime.close()


def _finish(rt: Runtime, video_id: str, record: dict[str, object]) -> None:
    """Claim ``video_id`` and apply ``record`` to it, as a worker would."""
    with rt.sessions.begin() as session:
        until = current_time(session) + timedelta(minutes=1)
        session.execute(
            update(Video)
            .where(Video.video_id == video_id)
            .values(claim_token="tok", claimed_until=until)
        )
    with rt.sessions.begin() as session:
        now, rows, _ = owned_rows(session, "tok", [video_id], 0)
    outcome = Record(record) if record else NotYet()
    decision = decide.decide(rows[video_id], outcome, now, rt.policy, random.Random(1))
    with rt.sessions.begin() as session:
        assert apply(session, video_id, "tok", decision)


def _age_done_rows(rt: Runtime, seconds: int) -> None:
    with rt.sessions.begin() as session:
        session.execute(
            text(
                "UPDATE videos SET done_at = done_at - make_interval(secs => :s) WHERE done_at IS NOT NULL"
            ),
            {"s": seconds},
        )


COMPLETED = {"video_status": 1, "video_status_final": True, "url": "https://v/1.mp4"}
FAILED = {"video_status": 8, "video_status_final": True}


def test_get_returns_the_public_view_or_none(rt: Runtime) -> None:
    api.enqueue([vid(1)], rt=rt)
    _finish(rt, vid(1), {"video_id": vid(1), **COMPLETED})
    video = api.get(vid(1), rt=rt)
    assert video is not None
    assert (video.state, video.status_name, video.url, video.completed) == (
        "done",
        None,
        "https://v/1.mp4",
        True,
    )
    assert video.record is not None and video.record["video_status"] == 1
    assert api.get(vid(999), rt=rt) is None


def test_paging_with_the_cursor_hands_out_every_finished_video_exactly_once(rt: Runtime) -> None:
    api.enqueue([vid(n) for n in range(1, 8)], rt=rt)
    for n in range(1, 6):
        _finish(rt, vid(n), {"video_id": vid(n), **(FAILED if n == 3 else COMPLETED)})
    _age_done_rows(rt, 60)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = api.completed_since(cursor, limit=2, rt=rt)
        seen += [v.video_id for v in page.videos]
        if not page.videos:
            break
        assert page.cursor is not None
        cursor = page.cursor.encode()
    assert sorted(seen) == sorted(vid(n) for n in range(1, 6))
    assert len(seen) == len(set(seen))
    # a row finishing later is handed out after the saved cursor, once it has settled
    _finish(rt, vid(6), {"video_id": vid(6), **COMPLETED})
    assert api.completed_since(cursor, rt=rt).videos == []  # not settled yet
    _age_done_rows(rt, 30)
    later = api.completed_since(cursor, rt=rt)
    assert [v.video_id for v in later.videos] == [vid(6)]


def test_only_completed_skips_final_failures(rt: Runtime) -> None:
    api.enqueue([vid(1), vid(2)], rt=rt)
    _finish(rt, vid(1), {"video_id": vid(1), **COMPLETED})
    _finish(rt, vid(2), {"video_id": vid(2), **FAILED})
    _age_done_rows(rt, 60)
    page = api.completed_since(None, only_completed=True, rt=rt)
    assert [v.video_id for v in page.videos] == [vid(1)]


def test_wait_for_wakes_on_notify_as_soon_as_the_row_is_done(rt: Runtime) -> None:
    api.enqueue([vid(1)], rt=rt)
    threading.Timer(0.5, _finish, args=(rt, vid(1), {"video_id": vid(1), **COMPLETED})).start()
    started = time.monotonic()
    video = api.wait_for(vid(1), timeout=20, rt=rt)
    waited = time.monotonic() - started
    assert video is not None and video.completed
    assert waited < 2.5, f"woke after {waited:.1f}s: NOTIFY was not used (re-check is every 3 s)"


def test_wait_for_returns_none_on_timeout_while_the_video_is_pending(rt: Runtime) -> None:
    api.enqueue([vid(1)], rt=rt)
    started = time.monotonic()
    assert api.wait_for(vid(1), timeout=0.5, rt=rt) is None
    assert time.monotonic() - started < 3


def test_wait_for_works_on_the_embedded_sqlite_database(tmp_path: Path) -> None:
    runtime = Runtime(
        load({"DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}", "TRACKER_FIRST_POLL_DELAY": "0"})
    )
    try:
        from pixverse_tracker.db.revisions import upgrade

        upgrade(runtime.engine)
        api.enqueue([vid(1)], rt=runtime)
        threading.Timer(
            0.3, _finish, args=(runtime, vid(1), {"video_id": vid(1), **COMPLETED})
        ).start()
        video = api.wait_for(vid(1), timeout=10, rt=runtime)
        assert video is not None and video.state == "done"
    finally:
        runtime.close()

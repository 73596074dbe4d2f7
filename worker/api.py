"""The Python API for applications: enqueue ids and read what the tracker knows.

    import pixverse_tracker
    report = pixverse_tracker.enqueue(["user:1-pixverse:me@example.com-video:42"])
    video = pixverse_tracker.wait_for("user:1-pixverse:me@example.com-video:42", timeout=600)
    page = pixverse_tracker.completed_since(saved_cursor)  # every finished video exactly once

Connections are opened on first use, from ``DATABASE_URL``; without it every call raises
``SettingsError`` (the tracker's database must be named: never a stray local file).
"""

from __future__ import annotations

import select
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pixverse_tracker.db.reports import finished_after, get_video
from pixverse_tracker.db.sql import NOTIFY_CHANNEL
from pixverse_tracker.models import Video
from pixverse_tracker.rules import ids, webhooks
from pixverse_tracker.rules.columns import PUBLIC_COLUMNS
from pixverse_tracker.rules.state import State
from pixverse_tracker.rules.verdict import COMPLETED
from pixverse_tracker.service import enqueue as service_enqueue
from pixverse_tracker.service import runtime
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import DATABASE


def _runtime(rt: Runtime | None) -> Runtime:
    # An application uses the database settings only: nothing else may stop its calls.
    return rt or runtime.get(needs=(DATABASE,))


@dataclass(frozen=True)
class EnqueueReport:
    """What one enqueue call did. ``refused`` lists invalid inputs; nothing else was lost."""

    added: list[str] = field(default_factory=list)
    rearmed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[ids.Refused] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused


def _webhook_url(webhook_url: str | None, callback_url: str | None) -> str | None:
    """``webhook_url``, or the deprecated ``callback_url`` (its name before 0.2) with a
    DeprecationWarning; both at once is a mistake, refused."""
    if callback_url is None:
        return webhook_url
    if webhook_url is not None:
        raise TypeError("enqueue() got both webhook_url and callback_url: give webhook_url only")
    warnings.warn(
        "enqueue(callback_url=...) is deprecated: use webhook_url=... (same meaning)",
        DeprecationWarning,
        stacklevel=3,
    )
    return callback_url


def enqueue_numbered(
    numbered: Iterable[tuple[int, str]],
    *,
    retrack: bool = False,
    webhook_url: str | None = None,
    rt: Runtime | None = None,
    callback_url: str | None = None,
) -> EnqueueReport:
    """Validate (position, id) pairs, store the valid ones in one batched upsert.

    ``callback_url`` is ``webhook_url``'s deprecated name (before 0.2)."""
    webhook_url = _webhook_url(webhook_url, callback_url)
    if webhook_url is not None:
        webhook_url = webhooks.validate_url(webhook_url)  # raises InvalidWebhookUrl
    valid, refused = ids.split_valid(numbered)
    if not valid:
        return EnqueueReport(refused=refused)
    rt = _runtime(rt)
    with rt.sessions.begin() as session:
        result = service_enqueue.enqueue(
            session, valid, rt.policy, retrack=retrack, webhook_url=webhook_url
        )
    return EnqueueReport(result.added, result.rearmed, result.unchanged, refused)


def enqueue(
    video_ids: Iterable[str],
    *,
    retrack: bool = False,
    webhook_url: str | None = None,
    rt: Runtime | None = None,
    callback_url: str | None = None,
) -> EnqueueReport:
    """Start tracking ``video_ids``. Idempotent; ``retrack`` re-arms done or abandoned ids.

    Invalid ids are reported in ``refused`` (position is 1-based); valid ones are stored.
    ``webhook_url``: POST the row there when it finishes (validated: http(s), at most 2048
    characters; raises ``InvalidWebhookUrl``). It is set on new ids, and on ids
    re-armed by ``retrack``; an id already tracked keeps its own. ``callback_url`` is its
    deprecated name (before 0.2): still accepted, with a DeprecationWarning.
    """
    webhook_url = _webhook_url(webhook_url, callback_url)
    return enqueue_numbered(
        enumerate(video_ids, start=1), retrack=retrack, webhook_url=webhook_url, rt=rt
    )


@dataclass(frozen=True)
class VideoView:
    """A tracked video as applications see it: the public columns (``rules.columns``), the
    latest record last. Its fields are ``PUBLIC_COLUMNS``, in order (a test checks it)."""

    video_id: str
    state: str
    status_code: int | None
    status_name: str | None
    status_final: bool | None
    url: str | None
    first_frame: str | None
    prompt: str | None
    model: str | None
    duration: float | None
    output_width: int | None
    output_height: int | None
    upstream_created_at: datetime | None
    enqueued_at: datetime
    updated_at: datetime
    last_polled_at: datetime | None
    next_poll_at: datetime | None
    done_at: datetime | None
    poll_count: int
    error_count: int
    last_http_status: int | None
    last_error: str | None
    abandon_reason: str | None
    record: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.state != State.PENDING

    @property
    def completed(self) -> bool:
        """Done with status COMPLETED: ``url`` is the video."""
        return self.state == State.DONE and self.status_code == COMPLETED

    @classmethod
    def of(cls, video: Video) -> VideoView:
        values = {name: getattr(video, name) for name in PUBLIC_COLUMNS}
        values["state"] = video.state.value  # a plain str, as applications always got it
        return cls(**values)


def get(video_id: str, *, rt: Runtime | None = None) -> VideoView | None:
    """The tracked video, or None if ``video_id`` is not tracked."""
    rt = _runtime(rt)
    with rt.sessions.begin() as session:
        video = get_video(session, video_id)
        return VideoView.of(video) if video is not None else None


@dataclass(frozen=True)
class Cursor:
    """Where a reader of finished videos stands: after (done_at, video_id)."""

    done_at: datetime
    video_id: str

    def encode(self) -> str:
        """A string to keep between runs (for example in the application's own table)."""
        return f"{self.done_at.astimezone(UTC).isoformat()}|{self.video_id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        stamp, _, video_id = text.partition("|")
        return cls(datetime.fromisoformat(stamp), video_id)


@dataclass(frozen=True)
class Page:
    videos: list[VideoView]
    cursor: Cursor | None  # pass it to the next call; unchanged when nothing new settled


def completed_since(
    cursor: Cursor | str | None = None,
    *,
    limit: int = 500,
    only_completed: bool = False,
    rt: Runtime | None = None,
) -> Page:
    """Finished (``done``) videos after ``cursor``, oldest first, at most ``limit``.

    Paging with the returned cursor never misses nor repeats a video: rows are ordered by
    (done_at, video_id), and only rows finished more than ``SETTLE`` seconds ago are handed
    out, so a transaction still committing an earlier ``done_at`` cannot slip in behind the
    cursor. ``only_completed`` keeps just COMPLETED ones (skipping FAILED, MODERATED...).
    """
    if isinstance(cursor, str):
        cursor = Cursor.decode(cursor)
    rt = _runtime(rt)
    with rt.sessions.begin() as session:
        rows = finished_after(
            session,
            after=(cursor.done_at, cursor.video_id) if cursor else None,
            settle=SETTLE,
            limit=limit,
            status_code=COMPLETED if only_completed else None,
        )
        videos = [VideoView.of(v) for v in rows]
    if videos:
        last = videos[-1]
        assert last.done_at is not None
        cursor = Cursor(last.done_at, last.video_id)
    return Page(videos, cursor)


def wait_for(video_id: str, timeout: float, *, rt: Runtime | None = None) -> VideoView | None:
    """Block until ``video_id`` is finished (done or abandoned), or ``timeout`` seconds pass.

    Postgres: listens on ``video_done`` so it wakes the moment the row is done; it also
    re-reads the row every few seconds, since abandoning sends no notification. SQLite:
    re-reads twice a second. Returns the finished video, or None on timeout (or unknown id).
    """
    rt = _runtime(rt)
    deadline = time.monotonic() + timeout
    if rt.engine.dialect.name == "postgresql":
        return _wait_listening(rt, video_id, deadline)
    while True:
        video = get(video_id, rt=rt)
        if video is None or video.finished:
            return video
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(0.5, left))


def _wait_listening(rt: Runtime, video_id: str, deadline: float) -> VideoView | None:
    raw = rt.engine.raw_connection()
    connection: Any = raw.driver_connection  # psycopg2's connection: LISTEN needs the driver
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
        # LISTEN first, then read: a row that became done in between is seen by the read.
        while True:
            video = get(video_id, rt=rt)
            if video is None or video.finished:
                return video
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if select.select([connection], [], [], min(left, RECHECK))[0]:
                connection.poll()
                connection.notifies.clear()
    finally:
        # The connection goes back to the pool: it must not stay in autocommit mode, or the
        # next session on it would lose its transactions.
        try:
            connection.cursor().execute(f"UNLISTEN {NOTIFY_CHANNEL}")
            connection.autocommit = False
        except Exception:  # noqa: BLE001 - whatever went wrong, never pool it again
            raw.invalidate()
        raw.close()


SETTLE = 5.0  # seconds: longer than any apply transaction takes to commit
RECHECK = 3.0  # seconds between re-reads while listening (abandonment sends no NOTIFY)

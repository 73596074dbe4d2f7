"""What the command line reads: a list of videos, one video with its history, each on the
database's clock. The faces use these, never ``db/`` itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pixverse_tracker.db import reports
from pixverse_tracker.db.sql import current_time
from pixverse_tracker.models import Video, VideoEvent
from pixverse_tracker.service.runtime import Runtime


@dataclass(frozen=True)
class Listing:
    """Videos as `list` shows them: the database's time, the rows, and how many rows match in
    all when a limit cut them (None when it did not)."""

    now: datetime
    videos: list[Video]
    total: int | None


def list_videos(rt: Runtime, *, limit: int | None, **filters: Any) -> Listing:
    """The videos matching ``filters`` (state, status, since), at most ``limit``; counted in
    all, in the same transaction, only when the limit was reached."""
    total = None
    with rt.sessions.begin() as session:
        now = current_time(session)
        videos = reports.list_videos(session, **filters, limit=limit)
        if limit is not None and len(videos) == limit:
            total = reports.count_videos(session, **filters)
    return Listing(now, videos, total)


def video_with_history(rt: Runtime, video_id: str) -> tuple[Video, list[VideoEvent]] | None:
    """The tracked video and its events in the order they were written; None when
    ``video_id`` is not tracked."""
    with rt.sessions.begin() as session:
        video = reports.get_video(session, video_id)
        if video is None:
            return None
        return video, reports.events_for(session, video_id)

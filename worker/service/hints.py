"""A push from useapi.net: the video may have finished, so its row is made due now."""

from __future__ import annotations

from pixverse_tracker.db.videos import mark_due
from pixverse_tracker.service.runtime import Runtime


def make_due(rt: Runtime, video_id: str) -> bool:
    """Make a pending, unclaimed row due now, in a transaction of its own; whether it moved.
    A row being polled keeps its claim but remembers the hint (``db.videos.mark_due``)."""
    with rt.sessions.begin() as session:
        return mark_due(session, video_id)

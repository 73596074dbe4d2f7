"""The public columns of a video row: one tuple, and each face's share of it.

``PUBLIC_COLUMNS`` is the one list, in the order applications see it: ``api.VideoView``'s
fields are exactly these. The command line and the webhook body show a part of it; each part
is the tuple less a named exclusion, so a column added here reaches every face that shows it.
"""

from __future__ import annotations

from collections.abc import Collection

RECORD = "record"

PUBLIC_COLUMNS = (
    "video_id", "state", "status_code", "status_name", "status_final", "url", "first_frame",
    "prompt", "model", "duration", "output_width", "output_height", "upstream_created_at",
    "enqueued_at", "updated_at", "last_polled_at", "next_poll_at", "done_at", "poll_count",
    "error_count", "last_http_status", "last_error", "abandon_reason", RECORD,
)  # fmt: skip

# The tracker's own timetable for a pending row: when it looked last and when it looks next.
# A webhook is sent for a finished video, where both say nothing, so its body leaves them out.
SCHEDULE_COLUMNS = ("last_polled_at", "next_poll_at")


def without(excluded: Collection[str]) -> tuple[str, ...]:
    """PUBLIC_COLUMNS in their order, less ``excluded`` (each of which must be one of them)."""
    unknown = set(excluded) - set(PUBLIC_COLUMNS)
    if unknown:
        raise ValueError(f"not public columns: {sorted(unknown)}")
    return tuple(name for name in PUBLIC_COLUMNS if name not in excluded)


# The command line's lists, JSON and CSV: the record is large, so only `show --json` adds it,
# after these.
LISTED_COLUMNS = without({RECORD})

# The webhook body's "video": the row as a receiver needs it once the video is finished.
PAYLOAD_COLUMNS = without(SCHEDULE_COLUMNS)

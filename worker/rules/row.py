"""What the rules are told about a pending row, and what they decide to write for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pixverse_tracker.rules.state import State


@dataclass(frozen=True)
class RowView:
    """What the rules need to know about a pending row (read under its row lock)."""

    video_id: str
    enqueued_at: datetime
    poll_count: int = 0
    error_count: int = 0
    status_code: int | None = None
    has_record: bool = False
    callback_url: str | None = None
    record_sha: str | None = None
    started_at: datetime | None = None
    list_missed_at: datetime | None = None
    last_polled_at: datetime | None = None
    claimed_until: datetime | None = None  # the claim's lease on it, while claimed
    list_offset: int | None = None  # the list page that last showed it


@dataclass(frozen=True)
class EventSpec:
    kind: str
    message: str | None = None
    http_status: int | None = None
    status_code: int | None = None
    status_name: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to write for one answer: new state, column values, history, and side effects."""

    state: State
    changes: dict[str, Any]
    events: tuple[EventSpec, ...] = ()
    notify_done: bool = False
    # Why we logged something noteworthy (anomalies); None when the answer was unremarkable.
    anomaly: str | None = None
    pause: str | None = None  # "auth" or "rate": the answer concerns every id, not this one
    retry_after: float | None = None

"""What the rules are told about a pending row, and what they decide to write for it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias, TypeVar

from pixverse_tracker.rules.events import EventKind
from pixverse_tracker.rules.state import State

T = TypeVar("T")


@dataclass(frozen=True)
class RowView:
    """What the rules need to know about a pending row (read under its row lock)."""

    video_id: str
    enqueued_at: datetime
    poll_count: int = 0
    error_count: int = 0
    status_code: int | None = None
    has_record: bool = False
    webhook_url: str | None = None
    record_sha: str | None = None
    started_at: datetime | None = None
    list_missed_at: datetime | None = None
    last_polled_at: datetime | None = None
    claimed_until: datetime | None = None  # the claim's lease on it, while claimed
    list_offset: int | None = None  # the list page that last showed it


@dataclass(frozen=True)
class EventSpec:
    """One row for the event log (``video_events``); its kind is an ``EventKind``, always."""

    kind: EventKind
    message: str | None = None
    http_status: int | None = None
    status_code: int | None = None
    status_name: str | None = None


class Unchanged(enum.Enum):
    """The value of a ``RowChanges`` field the rules leave alone: not None, which is NULL."""

    UNCHANGED = "unchanged"

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged.UNCHANGED

# A column's new value (None: set it NULL), or UNCHANGED: the UPDATE does not name it.
Change: TypeAlias = T | Literal[Unchanged.UNCHANGED]


def value_or_none(value: Change[T]) -> T | None:
    """The value written, or None when the column is left unchanged (for logs, not for SQL)."""
    return None if value is UNCHANGED else value


@dataclass(frozen=True)
class RowChanges:
    """The columns of a ``videos`` row one decision writes; every other field is UNCHANGED.

    One field per column the rules may set. ``as_columns`` gives the UPDATE's values: the set
    fields only, by column name, so a field left UNCHANGED is not in the statement at all.
    """

    updated_at: datetime
    claimed_until: Change[datetime | None] = UNCHANGED
    claim_token: Change[str | None] = UNCHANGED
    next_poll_at: Change[datetime | None] = UNCHANGED
    done_at: Change[datetime | None] = UNCHANGED
    last_polled_at: Change[datetime | None] = UNCHANGED
    last_http_status: Change[int | None] = UNCHANGED
    poll_count: Change[int] = UNCHANGED
    error_count: Change[int] = UNCHANGED
    last_error: Change[str | None] = UNCHANGED
    abandon_reason: Change[str | None] = UNCHANGED
    started_at: Change[datetime | None] = UNCHANGED
    list_missed_at: Change[datetime | None] = UNCHANGED
    list_offset: Change[int | None] = UNCHANGED
    # the status columns (from a record or a list entry)
    status_code: Change[int | None] = UNCHANGED
    status_name: Change[str | None] = UNCHANGED
    status_final: Change[bool | None] = UNCHANGED
    # the record, its digest, and its typed copies (``verdict.typed_columns``)
    record: Change[dict[str, Any] | None] = UNCHANGED
    record_sha: Change[str | None] = UNCHANGED
    url: Change[str | None] = UNCHANGED
    first_frame: Change[str | None] = UNCHANGED
    prompt: Change[str | None] = UNCHANGED
    model: Change[str | None] = UNCHANGED
    duration: Change[float | None] = UNCHANGED
    output_width: Change[int | None] = UNCHANGED
    output_height: Change[int | None] = UNCHANGED
    upstream_created_at: Change[datetime | None] = UNCHANGED

    def as_columns(self) -> dict[str, Any]:
        """The set fields by column name: the values of the UPDATE that writes them."""
        columns: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not UNCHANGED:
                columns[f.name] = value
        return columns


@dataclass(frozen=True)
class Decision:
    """What to write for one answer: new state, column values, history, and side effects."""

    state: State
    changes: RowChanges
    events: tuple[EventSpec, ...] = ()
    notify_done: bool = False
    # Why we logged something noteworthy (anomalies); None when the answer was unremarkable.
    anomaly: str | None = None
    pause: str | None = None  # "auth" or "rate": the answer concerns every id, not this one
    retry_after: float | None = None

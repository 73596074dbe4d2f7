"""The public ``videos`` table and its ``video_events`` history; a row's ``State`` is the rules'."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from pixverse_tracker.models.base import Base, BigId, JSONDocument, UTCDateTime
from pixverse_tracker.rules.state import State

STATE_VALUES = ", ".join(f"'{s.value}'" for s in State)


class StateColumn(TypeDecorator[State]):
    """A ``State`` stored as its string in a VARCHAR(16): the column as migrated, a State in
    Python. Only the Python side changes: the DDL is the impl's, so Alembic sees no difference.

    A bound string passes through as it is (a filter on a state nobody has matches nothing, as
    before); rows come back as ``State``, which the CHECK ``state_known`` guarantees they are.
    """

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: State | str | None, dialect: Dialect) -> str | None:
        return value.value if isinstance(value, State) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> State | None:
        return None if value is None else State(value)


class Video(Base):
    """One tracked id. Column names are a public contract (see README)."""

    __tablename__ = "videos"

    video_id: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[State] = mapped_column(StateColumn(), default=State.PENDING)

    status_code: Mapped[int | None] = mapped_column(Integer)
    status_name: Mapped[str | None] = mapped_column(Text)
    status_final: Mapped[bool | None] = mapped_column(Boolean)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    # sha256 of the stored record: an identical answer leaves record and columns untouched
    record_sha: Mapped[str | None] = mapped_column(String(64))

    url: Mapped[str | None] = mapped_column(Text)
    first_frame: Mapped[str | None] = mapped_column(Text)
    prompt: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[float | None] = mapped_column(Float)
    output_width: Mapped[int | None] = mapped_column(Integer)
    output_height: Mapped[int | None] = mapped_column(Integer)
    upstream_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Due time while pending; a claim moves it to the lease's end, so an expired lease is
    # simply "due again" and one partial index serves the whole dispatch query.
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a useapi.net push last hinted that the video may be finished (see web/receiver.py).
    hinted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the upstream was first seen generating it: done_at - started_at is the generation
    # time the adaptive schedule learns from (worker/rules/schedule.py).
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a read of the account's list last failed to show it: polled by id for a while.
    list_missed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The offset of the list page that last showed it in progress: its next list read starts
    # there, so the ids of a big account are read page by page at once, not from the top.
    list_offset: Mapped[int | None] = mapped_column(Integer)
    # When the upstream's scheduler (GET /v2/pixverse/scheduler/) last listed it as executing.
    # Set: a later read without it means it has just finished (worker/service/scheduler_read.py).
    scheduler_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    poll_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    error_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    abandon_reason: Mapped[str | None] = mapped_column(Text)

    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The fencing token of the current claim: an answer is applied only if it still matches.
    claim_token: Mapped[str | None] = mapped_column(String(36))
    # Where to POST the row when it finishes (NULL: TRACKER_WEBHOOK_URL, if set).
    webhook_url: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(f"state IN ({STATE_VALUES})", name="state_known"),
        Index(
            "ix_videos_due",
            "next_poll_at",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        # The rows a scheduler read must find when their id has left the scheduler: few
        # (the jobs executing now), whatever the size of the table.
        Index(
            "ix_videos_scheduled",
            "video_id",
            postgresql_where=text("state = 'pending' AND scheduler_seen_at IS NOT NULL"),
            sqlite_where=text("state = 'pending' AND scheduler_seen_at IS NOT NULL"),
        ),
        # Finished rows only: an update of a pending row then writes no entry here
        # (migrations/versions/0007_cheap_row_updates.py).
        Index(
            "ix_videos_done_at",
            "done_at",
            "video_id",
            postgresql_where=text("done_at IS NOT NULL"),
            sqlite_where=text("done_at IS NOT NULL"),
        ),
    )

    def __repr__(self) -> str:
        # the state as its string, as it always printed (None before the row's first flush)
        state = self.state.value if isinstance(self.state, State) else self.state
        return f"Video({self.video_id!r}, state={state!r}, status={self.status_name!r})"


class VideoEvent(Base):
    """One change that matters in a video's life: enqueued, status changed, done, errors..."""

    __tablename__ = "video_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    video_id: Mapped[str] = mapped_column(
        Text, ForeignKey("videos.video_id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # pruning reads by time
    kind: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    status_name: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"VideoEvent({self.video_id!r}, {self.kind!r}, at={self.at!r})"

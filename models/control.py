"""Tracker-wide shared state: the global rate limiter and pause flags, and per-minute poll counts.

Shared state lives in the database because Celery's own ``rate_limit`` is per worker, and the
limit we promise the upstream is global across every worker and beat.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Float, Integer, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from pixverse_tracker.models.base import Base, UTCDateTime

CONTROL_ROW_ID = 1


class TrackerControl(Base):
    """The single row every dispatcher locks to hand out request slots."""

    __tablename__ = "tracker_control"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Theoretical arrival time of the next free request slot (GCRA): slots are 1/rate apart.
    next_slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Multiplier on TRACKER_RATE_LIMIT after 429s; it climbs back to 1 over time.
    rate_factor: Mapped[float] = mapped_column(Float, default=1.0, server_default=text("1"))
    rate_factor_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    throttled_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auth_paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auth_failing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    auth_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auth_error: Mapped[str | None] = mapped_column(Text)
    last_dispatch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The token-wide scheduler read: when the last one started and answered, how many failed
    # in a row since (reads back off), and why the last one failed.
    scheduler_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scheduler_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scheduler_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    scheduler_error: Mapped[str | None] = mapped_column(Text)
    scheduler_executing: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (CheckConstraint(f"id = {CONTROL_ROW_ID}", name="single_row"),)


class PollMinute(Base):
    """How many polls (by outcome) ended in one minute; feeds ``status``."""

    __tablename__ = "poll_minutes"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    polls: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    errors: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    rate_limited: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    unauthorized: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

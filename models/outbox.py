"""The webhook outbox: deliveries to applications, written in the same transaction as the
state change they announce, so a crash never loses or invents one."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from pixverse_tracker.models.base import Base, BigId, UTCDateTime


class WebhookDelivery(Base):
    """One POST owed to an application: done until a 2xx, or failed after the last attempt."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    video_id: Mapped[str] = mapped_column(
        Text, ForeignKey("videos.video_id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # "done" or "abandoned"
    # The exact bytes we sign and send, every attempt: the signature and the idempotency key
    # stay valid across retries.
    body: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (
        # Deliveries still owed, by due time: the only rows the sender ever scans.
        Index(
            "ix_webhook_outbox_due",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL AND failed_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL AND failed_at IS NULL"),
        ),
    )

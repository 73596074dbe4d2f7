"""SQL on ``webhook_outbox``: deliveries owed to applications, claimed, and their results.

A delivery is written in the same transaction as the state change it announces, so a crash
never loses or invents one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from pixverse_tracker.db.sql import current_time, table_of
from pixverse_tracker.models import WebhookDelivery


def queue(
    session: Session, *, video_id: str, url: str, kind: str, body: str, key: str, now: datetime
) -> None:
    """Owe one delivery: ``body`` is the exact text signed and sent at every attempt."""
    session.execute(
        insert(table_of(WebhookDelivery)).values(
            video_id=video_id,
            url=url,
            kind=kind,
            body=body,
            idempotency_key=key,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
    )


@dataclass(frozen=True)
class Delivery:
    id: int
    video_id: str
    url: str
    kind: str
    body: str
    idempotency_key: str
    attempts: int


def claim_deliveries(session: Session, *, limit: int, lease: float) -> tuple[str, list[Delivery]]:
    """Claim owed webhooks (FOR UPDATE SKIP LOCKED); a crashed sender's come back after lease."""
    now = current_time(session)
    token = uuid.uuid4().hex
    outbox = table_of(WebhookDelivery)
    due = (
        select(outbox.c.id)
        .where(
            outbox.c.delivered_at.is_(None),
            outbox.c.failed_at.is_(None),
            outbox.c.next_attempt_at <= now,
        )
        .order_by(outbox.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(outbox)
        .where(outbox.c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=now + timedelta(seconds=lease), claim_token=token)
        .returning(
            outbox.c.id,
            outbox.c.video_id,
            outbox.c.url,
            outbox.c.kind,
            outbox.c.body,
            outbox.c.idempotency_key,
            outbox.c.attempts,
        )
    ).all()
    return token, [Delivery(*row) for row in sorted(rows)]


def delivery_result(
    session: Session,
    delivery_id: int,
    token: str,
    ok: bool,
    status: int | None,
    error: str | None,
    retry_in: timedelta | None,
) -> None:
    """Record one attempt: delivered, due again after ``retry_in``, or failed for good (None)."""
    now = current_time(session)
    outbox = table_of(WebhookDelivery)
    values: dict[str, Any] = {
        "attempts": outbox.c.attempts + 1,
        "last_status": status,
        "last_error": error,
        "claim_token": None,
    }
    if ok:
        values.update(delivered_at=now, next_attempt_at=None)
    elif retry_in is None:
        values.update(failed_at=now, next_attempt_at=None)
    else:
        values.update(next_attempt_at=now + retry_in)
    session.execute(
        update(outbox)
        .where(outbox.c.id == delivery_id, outbox.c.claim_token == token)
        .values(**values)
    )


def webhooks_owed(session: Session) -> int:
    """Webhook deliveries not yet made nor given up, for the metrics."""
    outbox = table_of(WebhookDelivery)
    owed = session.execute(
        select(func.count())
        .select_from(outbox)
        .where(outbox.c.delivered_at.is_(None), outbox.c.failed_at.is_(None))
    ).scalar_one()
    return int(owed)

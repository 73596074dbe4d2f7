"""Applying one decision: its row written under the claim's guard, with the webhook the
application is owed, the history and the NOTIFY, all in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from pixverse_tracker.db import outbox, videos
from pixverse_tracker.db.sql import add_events
from pixverse_tracker.rules.row import Decision
from pixverse_tracker.rules.state import State
from pixverse_tracker.rules.webhooks import body_for, idempotency_key


def apply(
    session: Session,
    video_id: str,
    token: str,
    decision: Decision,
    webhook_url: str | None = None,
    sent_at: datetime | None = None,
) -> bool:
    """Write one decision, guarded by the claim token and ``state = 'pending'``.

    Returns False (and writes nothing) when the claim no longer holds: a late or duplicate
    answer can never move a finished row, nor overwrite a newer claimant's record. When the
    row finishes and ``webhook_url`` is given, the webhook is queued in the same transaction.
    """
    now = decision.changes.updated_at
    if decision.state is not State.PENDING and webhook_url is not None:
        # the finished row, as committed, is the webhook's body
        row = videos.write_final(session, video_id, token, decision, sent_at)
        if row is None:
            return False
        kind = decision.state.value
        key = idempotency_key(row["video_id"], kind, row["enqueued_at"])
        outbox.queue(
            session,
            video_id=row["video_id"],
            url=webhook_url,
            kind=kind,
            body=body_for(kind, key, row),
            key=key,
            now=now,
        )
    elif not videos.write_decision(session, video_id, token, decision, sent_at):
        return False
    add_events(session, now, [(video_id, e) for e in decision.events])
    if decision.notify_done:
        videos.notify_done(session, video_id)
    return True

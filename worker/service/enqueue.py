"""Enqueue: the first look at each new id, as the rules place it, and one batched insert."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from pixverse_tracker.db import videos
from pixverse_tracker.db.sql import current_time
from pixverse_tracker.rules.listing import first_polls
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.rules.timing import first_poll_at
from pixverse_tracker.service.knowledge import knowledge


@dataclass(frozen=True)
class EnqueueResult:
    added: list[str] = field(default_factory=list)
    rearmed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def enqueue(
    session: Session,
    video_ids: Sequence[str],
    policy: Policy,
    *,
    retrack: bool = False,
    webhook_url: str | None = None,
) -> EnqueueResult:
    """Insert valid, de-duplicated ids; existing rows are left alone unless ``retrack``.

    A batch is one statement (Postgres: the ids travel as one array), not a round trip per id.
    """
    now = current_time(session)
    known = knowledge(session) if policy.schedule == "adaptive" else None
    first = first_poll_at(now, policy, known)
    firsts = first_polls(video_ids, now, policy, known) if policy.list_interval else None
    added, rearmed = videos.insert(
        session,
        video_ids,
        now=now,
        first=first,
        firsts=firsts,
        retrack=retrack,
        webhook_url=webhook_url,
    )
    touched = set(added) | set(rearmed)
    return EnqueueResult(added, rearmed, [v for v in video_ids if v not in touched])

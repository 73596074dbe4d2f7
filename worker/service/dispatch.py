"""Dispatch: claim what the global rate allows for the next dispatch interval, and cut the
claim into poll batches, the messages a poll task carries.

Celery-free, so the same code runs in tasks, benchmarks and tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from pixverse_tracker.logs import event
from pixverse_tracker.service.claim import claim_due
from pixverse_tracker.service.runtime import Runtime

log = logging.getLogger("tracker.poll")


@dataclass(frozen=True)
class Batch:
    """What one poll task carries: the claim's token and its requests, each with its slot in
    seconds after ``start``: ids fetched one by one, and list reads that answer for several."""

    token: str
    start: datetime
    items: list[tuple[str, float]]
    # (account, slot, ids, list offset): a list read starting at the page that last showed ids
    lists: list[tuple[str, float, list[str], int]] = field(default_factory=list)
    spacing: float = 0.0  # the limiter's seconds between two requests (0: 1 / rate limit)

    @property
    def ids(self) -> list[str]:
        return [v for v, _ in self.items] + [v for _, _, ids, _ in self.lists for v in ids]

    def to_message(self) -> dict[str, object]:
        message: dict[str, object] = {
            "token": self.token,
            "start": self.start.isoformat(),
            "items": [[video_id, round(offset, 3)] for video_id, offset in self.items],
        }
        if self.lists:
            message["lists"] = [[a, round(o, 3), list(ids), p] for a, o, ids, p in self.lists]
        if self.spacing:
            message["spacing"] = self.spacing
        return message

    @classmethod
    def from_message(cls, message: dict[str, object]) -> Batch:
        items = message["items"]
        lists = message.get("lists", [])
        assert isinstance(items, list) and isinstance(lists, list)
        return cls(
            token=str(message["token"]),
            start=datetime.fromisoformat(str(message["start"])),
            items=[(str(v), float(o)) for v, o in items],
            # a message from before list offsets had three fields: its reads start at the top
            lists=[
                (str(a), float(o), [str(v) for v in ids], int(rest[0]) if rest else 0)
                for a, o, ids, *rest in lists
            ],
            spacing=float(str(message.get("spacing", 0.0))),
        )


def dispatch(rt: Runtime) -> list[Batch]:
    """Claim what the global rate allows for the next dispatch interval, in batches."""
    s = rt.settings
    with rt.sessions.begin() as session:
        claim = claim_due(
            session,
            rate_limit=s.rate_limit,
            horizon=s.dispatch_interval,
            lease=s.lease,
            policy=rt.policy,
        )
    if claim.token is None:
        if claim.reason:
            event(log, logging.INFO, "dispatch_idle", reason=claim.reason)
        return []
    batches = []
    for i in range(0, len(claim.requests), s.batch_size):
        chunk = claim.requests[i : i + s.batch_size]
        offsets = [(r, (r.slot - claim.now).total_seconds()) for r in chunk]
        batches.append(
            Batch(
                claim.token,
                claim.now,
                [(r.ids[0], o) for r, o in offsets if r.account is None],
                [
                    (r.account, o, list(r.ids), r.offset)
                    for r, o in offsets
                    if r.account is not None
                ],
                claim.spacing,
            )
        )
    if claim.requests:
        event(
            log,
            logging.INFO,
            "dispatch",
            claimed=len(claim.slots),
            requests=len(claim.requests),
            batches=len(batches),
        )
    return batches

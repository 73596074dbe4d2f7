"""The Python API for applications: enqueue ids and read what the tracker knows.

    from worker.api import enqueue
    report = enqueue(["user:1-pixverse:me@example.com-video:42"])
    report.refused  # invalid ids, each with the reason; valid ones are stored regardless

Connections are opened on first use, from ``DATABASE_URL`` (or the embedded default).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from worker import ids, runtime, store
from worker.runtime import Runtime


@dataclass(frozen=True)
class EnqueueReport:
    """What one enqueue call did. ``refused`` lists invalid inputs; nothing else was lost."""

    added: list[str] = field(default_factory=list)
    rearmed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[ids.Refused] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused


def enqueue_numbered(
    numbered: Iterable[tuple[int, str]], *, retrack: bool = False, rt: Runtime | None = None
) -> EnqueueReport:
    """Validate (position, id) pairs, store the valid ones in one batched upsert."""
    valid, refused = ids.split_valid(numbered)
    if not valid:
        return EnqueueReport(refused=refused)
    rt = rt or runtime.get()
    with rt.sessions.begin() as session:
        result = store.enqueue(session, valid, rt.policy, retrack=retrack)
    return EnqueueReport(result.added, result.rearmed, result.unchanged, refused)


def enqueue(
    video_ids: Iterable[str], *, retrack: bool = False, rt: Runtime | None = None
) -> EnqueueReport:
    """Start tracking ``video_ids``. Idempotent; ``retrack`` re-arms done or abandoned ids.

    Invalid ids are reported in ``refused`` (position is 1-based); valid ones are stored.
    """
    return enqueue_numbered(enumerate(video_ids, start=1), retrack=retrack, rt=rt)

"""What the threads of one poll batch share: the rows it holds and their leases, what is still
unanswered, its report, and the database's clock carried on by the monotonic one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pixverse_tracker.rules import schedule
from pixverse_tracker.rules.outcomes import PollCounts
from pixverse_tracker.rules.row import RowView
from pixverse_tracker.service.dispatch import Batch
from pixverse_tracker.service.runtime import Runtime


@dataclass
class BatchReport:
    polled: int = 0  # requests sent (single videos and list pages)
    listed: int = 0  # of which list pages
    applied: int = 0
    stale: int = 0
    released: int = 0
    adopted: int = 0  # finished ids a list page showed that another poll would have found
    reslotted: int = 0  # requests that missed their slots and took new ones
    failed_to_store: int = 0
    counts: PollCounts = field(default_factory=PollCounts)


class BatchState:
    """State shared by the threads of one poll batch (guarded by ``lock``)."""

    def __init__(self, rt: Runtime, batch: Batch) -> None:
        self.rt = rt
        self.batch = batch
        self.lock = threading.Lock()
        self.pause_until: datetime | None = None
        self.report = BatchReport()
        self.auth_failing = False
        self.rows: dict[str, RowView] = {}
        # Each held id's lease end (database time): a request may start only while the
        # leases of all its ids still cover it (``covered``); follow-ups renew them.
        self.leases: dict[str, datetime] = {}
        # Claimed (or adopted) ids whose answer is not applied yet: released at the end.
        self.unanswered: set[str] = set()
        # Ids the list did not show: if they are released unanswered (a 429 stopped the
        # batch), they are marked so that the next dispatch fetches them by id.
        self.missed: set[str] = set()
        self.knowledge: schedule.Knowledge | None = None
        self.db_start: datetime = batch.start
        self.mono_start = time.monotonic()

    def db_now(self) -> datetime:
        """The database's clock, advanced by our own monotonic clock: skew-proof, no query."""
        return self.db_start + timedelta(seconds=time.monotonic() - self.mono_start)

    def mono_at(self, when: datetime) -> float:
        return self.mono_start + (when - self.db_start).total_seconds()

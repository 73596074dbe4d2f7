"""What the adaptive schedule knows: how long the newest finished videos took, from our table,
and a per-runtime cache of it for the poll batches."""

from __future__ import annotations

import logging
import threading
import time
import weakref

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pixverse_tracker.db.engines import describe_error
from pixverse_tracker.db.reports import finished_durations
from pixverse_tracker.logs import event
from pixverse_tracker.rules import schedule
from pixverse_tracker.service.runtime import Runtime

log = logging.getLogger("tracker.poll")


def knowledge(
    session: Session,
    limit: int = schedule.SAMPLE_ROWS,
    prior: schedule.Durations = schedule.PRIOR_COMPLETION,
) -> schedule.Knowledge:
    """The completion and generation times of the newest ``limit`` done rows (a bounded read
    whatever the table's size), with ``prior`` standing in until enough are known."""
    finished = finished_durations(session, limit)
    return schedule.Knowledge(
        completion=schedule.Durations.of((d - e).total_seconds() for d, e, _ in finished),
        generation=schedule.Durations.of(
            (d - s).total_seconds() for d, _, s in finished if s is not None
        ),
        prior=prior,
    )


class KnowledgeCache:
    """The schedule's view of our own table (``knowledge``), re-read now and then.

    Every dozen dispatch intervals (a minute by default): finished videos change the
    distribution slowly, and one read per batch would cost a query per task.
    """

    REFRESH_DISPATCHES = 12

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # weak keys: a runtime's entry goes with it, and a new one never inherits a stale entry
        self._read: weakref.WeakKeyDictionary[Runtime, tuple[float, schedule.Knowledge]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, rt: Runtime) -> schedule.Knowledge | None:
        if rt.policy.schedule != "adaptive":
            return None
        ttl = self.REFRESH_DISPATCHES * rt.settings.dispatch_interval
        key, now = rt, time.monotonic()
        with self._lock:
            cached = self._read.get(key)
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        try:
            with rt.sessions() as session:
                prior = schedule.prior_for(rt.policy.typical_duration)
                known = knowledge(session, prior=prior)
        except SQLAlchemyError as exc:
            event(log, logging.WARNING, "knowledge_not_read", error=describe_error(exc))
            return cached[1] if cached is not None else None
        with self._lock:
            self._read[key] = (now, known)
        return known


KNOWLEDGE = KnowledgeCache()

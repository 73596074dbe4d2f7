"""Dispatch and poll, the I/O around the rules: claim due ids, fetch each at its slot, apply.

Celery-free, so the same code runs in tasks, benchmarks and tests. Tasks in ``tasks.py`` only
pass ids and call these functions.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from models import State
from worker import metrics, store, tracking
from worker.db import describe_error
from worker.logs import event
from worker.outcomes import Outcome, RateLimited, Transient, Unauthorized, kind_of
from worker.runtime import Runtime

log = logging.getLogger("tracker.poll")
_rng = random.SystemRandom()


@dataclass(frozen=True)
class Batch:
    """What one poll task carries: the claim's token and (id, seconds after ``start``) pairs."""

    token: str
    start: datetime
    items: list[tuple[str, float]]

    def to_message(self) -> dict[str, object]:
        return {
            "token": self.token,
            "start": self.start.isoformat(),
            "items": [[video_id, round(offset, 3)] for video_id, offset in self.items],
        }

    @classmethod
    def from_message(cls, message: dict[str, object]) -> Batch:
        items = message["items"]
        assert isinstance(items, list)
        return cls(
            token=str(message["token"]),
            start=datetime.fromisoformat(str(message["start"])),
            items=[(str(v), float(o)) for v, o in items],
        )


def dispatch(rt: Runtime) -> list[Batch]:
    """Claim what the global rate allows for the next dispatch interval, in batches."""
    s = rt.settings
    with rt.sessions.begin() as session:
        claim = store.claim_due(
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
    items = [(video_id, (slot - claim.now).total_seconds()) for video_id, slot in claim.slots]
    batches = [
        Batch(claim.token, claim.now, items[i : i + s.batch_size])
        for i in range(0, len(items), s.batch_size)
    ]
    if items:
        event(log, logging.INFO, "dispatch", claimed=len(items), batches=len(batches))
    return batches


@dataclass
class BatchReport:
    polled: int = 0
    applied: int = 0
    stale: int = 0
    released: int = 0
    failed_to_store: int = 0
    counts: tracking.PollCounts = field(default_factory=tracking.PollCounts)


class _BatchRun:
    """State shared by the threads of one poll batch."""

    def __init__(self, rt: Runtime, batch: Batch) -> None:
        self.rt = rt
        self.batch = batch
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pause_until: datetime | None = None
        self.report = BatchReport()
        self.auth_failing = False
        self.rows: dict[str, tracking.RowView] = {}
        self.skipped: list[str] = []  # handed to the pool, then stopped by a 401/429
        self.db_start: datetime = batch.start
        self.mono_start = time.monotonic()

    def db_now(self) -> datetime:
        """The database's clock, advanced by our own monotonic clock: skew-proof, no query."""
        return self.db_start + timedelta(seconds=time.monotonic() - self.mono_start)

    def fetch_and_apply(self, video_id: str) -> None:
        if self.stop.is_set():
            # queued behind a 401/429: give it back with the others, not at lease end
            with self.lock:
                self.skipped.append(video_id)
            return
        sent_at = self.db_now()
        outcome = self.rt.client.fetch(video_id)
        with self.lock:
            self.report.polled += 1
            self.report.counts.add(outcome)
        self._log(video_id, outcome)
        try:
            self._account_wide(outcome)
            self._apply(video_id, outcome, sent_at)
        except SQLAlchemyError as exc:
            # The answer is lost but the id is not: its lease runs out and it is polled again.
            with self.lock:
                self.report.failed_to_store += 1
            event(log, logging.ERROR, "store_failed", video_id=video_id, error=describe_error(exc))

    def _account_wide(self, outcome: Outcome) -> None:
        """401 and 429 concern every id: pause everyone, in the shared control row."""
        policy = self.rt.policy
        if isinstance(outcome, Unauthorized):
            self.stop.set()
            with self.rt.sessions.begin() as session:
                until = store.note_unauthorized(session, outcome.message, policy)
            self._pause(until)
            event(log, logging.ERROR, "auth_rejected", paused_until=until.isoformat())
        elif isinstance(outcome, RateLimited):
            self.stop.set()
            with self.rt.sessions.begin() as session:
                until = store.note_rate_limited(session, outcome.retry_after, policy)
            self._pause(until)
            event(log, logging.WARNING, "rate_limited", throttled_until=until.isoformat())
        elif self.auth_failing and not isinstance(outcome, Transient):
            with self.rt.sessions.begin() as session:
                store.note_auth_ok(session)
            self.auth_failing = False
            event(log, logging.INFO, "auth_ok")

    def _pause(self, until: datetime) -> None:
        with self.lock:
            if self.pause_until is None or until > self.pause_until:
                self.pause_until = until

    def _apply(self, video_id: str, outcome: Outcome, sent_at: datetime) -> None:
        decision = tracking.decide(
            self.rows[video_id], outcome, self.db_now(), self.rt.policy, _rng, sent_at
        )
        row = self.rows[video_id]
        callback_url = row.callback_url or self.rt.settings.webhook_url
        with self.rt.sessions.begin() as session:
            applied = store.apply(
                session, video_id, self.batch.token, decision, callback_url, sent_at
            )
        with self.lock:
            if applied:
                self.report.applied += 1
            else:
                self.report.stale += 1
        if not applied:
            event(log, logging.WARNING, "stale_answer_dropped", video_id=video_id)
        if decision.anomaly:
            event(log, logging.WARNING, "anomaly", video_id=video_id, detail=decision.anomaly)
        if decision.state is not State.PENDING and applied:
            event(
                log,
                logging.INFO,
                decision.state.value,
                video_id=video_id,
                reason=decision.changes.get("abandon_reason")
                or decision.changes.get("status_name"),
            )

    def _log(self, video_id: str, outcome: Outcome) -> None:
        metrics.record_poll(kind_of(outcome), outcome.latency)
        level = logging.WARNING if isinstance(outcome, Transient) else logging.INFO
        fields: dict[str, object] = {
            "video_id": video_id,
            "outcome": kind_of(outcome),
            "http_status": outcome.http_status,
            "latency": outcome.latency,
        }
        if isinstance(outcome, Transient):
            fields["reason"] = outcome.reason
        event(log, level, "poll", **fields)


def poll_batch(rt: Runtime, batch: Batch) -> BatchReport:
    """Fetch each id of the batch at its slot (bounded concurrency) and apply each answer."""
    s = rt.settings
    run = _BatchRun(rt, batch)
    # Every request must be able to finish before the lease ends: connect, first byte, body.
    margin = s.http_connect_timeout + 2 * s.http_timeout + 1.0
    ids = [video_id for video_id, _ in batch.items]
    # Anchor the monotonic clock *before* the query that reads the database time: measured
    # after it (and its commit), a slow machine would date every answer too early.
    before = time.monotonic()
    with rt.sessions.begin() as session:
        now, run.rows, run.auth_failing = store.owned_rows(session, batch.token, ids, margin)
    run.db_start, run.mono_start = now, before
    run.report.stale = len(ids) - len(run.rows)
    if not run.rows:
        event(log, logging.INFO, "stale_batch_skipped", ids=len(ids))
        return run.report

    # Stop starting requests once what is left of the lease could not cover one more.
    lease_left = s.lease - (now - batch.start).total_seconds()
    stop_starting_at = run.mono_start + max(0.0, lease_left - margin)
    fired: set[str] = set()
    items = sorted(batch.items, key=lambda item: item[1])
    spacing = _slot_spacing(items) or 1.0 / s.rate_limit
    # A request starts only when a thread is free to send it at once, and never closer than
    # one slot to any other request of this process (PACER is shared by every batch running
    # here): batches that fell behind (slow upstream, busy machine) catch up at the allowed
    # rate instead of firing their overdue slots together in a burst.
    free = threading.BoundedSemaphore(s.poll_concurrency)
    with ThreadPoolExecutor(s.poll_concurrency, thread_name_prefix="poll") as pool:
        for video_id, offset in items:
            if video_id not in run.rows:
                continue
            slot_at = run.mono_start + offset - (now - batch.start).total_seconds()
            if run.stop.wait(max(0.0, slot_at - time.monotonic())):
                break
            while not (acquired := free.acquire(timeout=0.5)):
                if run.stop.is_set():
                    break
            start_at = PACER.reserve(slot_at, spacing) if acquired else 0.0
            if not acquired or run.stop.wait(max(0.0, start_at - time.monotonic())):
                if acquired:
                    free.release()
                break
            if time.monotonic() > stop_starting_at:
                free.release()
                break
            fired.add(video_id)
            pool.submit(_guarded, run, video_id, free)
    unsent = [video_id for video_id in run.rows if video_id not in fired] + run.skipped
    _release(rt, run, unsent)
    try:
        with rt.sessions.begin() as session:
            store.add_poll_counts(session, run.report.counts)
    except SQLAlchemyError as exc:
        event(log, logging.WARNING, "counts_not_stored", error=describe_error(exc))
    return run.report


class Pacer:
    """Hands out request start times at least ``spacing`` apart, across threads (monotonic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_free = -math.inf

    def reserve(self, not_before: float, spacing: float) -> float:
        with self._lock:
            start = max(not_before, self._next_free)
            self._next_free = start + spacing
            return start


PACER = Pacer()  # one per process: every batch a worker runs shares it


def _slot_spacing(items: Sequence[tuple[str, float]]) -> float:
    """The gap between this batch's consecutive slots (they are evenly spaced by dispatch)."""
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(items) if b[1] > a[1]]
    return min(gaps) if gaps else 0.0


def _guarded(run: _BatchRun, video_id: str, free: threading.BoundedSemaphore) -> None:
    try:
        run.fetch_and_apply(video_id)
    except Exception:  # a thread must never die silently; the lease recovers the id
        log.exception("unexpected error while polling %s", video_id)
    finally:
        free.release()


def _release(rt: Runtime, run: _BatchRun, unsent: Sequence[str]) -> None:
    if not unsent:
        return
    try:
        with rt.sessions.begin() as session:
            run.report.released = store.release(session, run.batch.token, unsent, run.pause_until)
        event(log, logging.INFO, "released", ids=len(unsent), until=str(run.pause_until))
    except SQLAlchemyError as exc:
        event(log, logging.WARNING, "release_failed", ids=len(unsent), error=describe_error(exc))

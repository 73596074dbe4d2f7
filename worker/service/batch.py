"""One poll batch: each request sent at its slot by a few threads, its answer applied, 401 and
429 pausing every worker, late requests given new slots, and whatever is left unanswered at the
end released for the next dispatch.

Celery-free, so the same code runs in tasks, benchmarks and tests; ``jobs.tasks`` only passes
the batch's message in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from pixverse_tracker.db.claim import owned_rows, set_leases
from pixverse_tracker.db.control import add_poll_counts, note_auth_ok
from pixverse_tracker.db.engines import describe_error
from pixverse_tracker.db.videos import note_list_missed, release
from pixverse_tracker.logs import event
from pixverse_tracker.rules import listing
from pixverse_tracker.rules.outcomes import (
    ListOutcome,
    Outcome,
    Page,
    RateLimited,
    Rejected,
    Transient,
    Unauthorized,
    kind_of,
)
from pixverse_tracker.service import metrics
from pixverse_tracker.service.answers import apply_answers, job_failed, store_failed
from pixverse_tracker.service.batch_state import BatchReport, BatchState
from pixverse_tracker.service.dispatch import Batch
from pixverse_tracker.service.job_queue import Fetch, Job, JobQueue, ListRead, ids_of
from pixverse_tracker.service.knowledge import KNOWLEDGE
from pixverse_tracker.service.limiter import note_rate_limited, note_unauthorized, reserve_slots
from pixverse_tracker.service.list_reads import log_list, read_page
from pixverse_tracker.service.pacing import MAX_RESLOTS, PACER, late_tolerance
from pixverse_tracker.service.runtime import Runtime

log = logging.getLogger("tracker.poll")


class BatchRun(BatchState):
    """One batch being run: its shared state, its queue of jobs, and how each job runs."""

    def __init__(self, rt: Runtime, batch: Batch) -> None:
        super().__init__(rt, batch)
        self.queue = JobQueue(self.lock)
        self.reslots: dict[tuple[str, ...], int] = {}  # late starts, by the job's ids

    def halt(self) -> None:
        self.queue.halt()

    def reslot(self, jobs: Sequence[Job]) -> None:
        """Give requests that missed their slots new ones (and leases to match).

        A request fired late would meet the next slot's request from another worker, two at
        once where the limiter booked one; a request sent after its lease could answer an id
        another claim holds. So a late one takes a fresh slot from the global limiter instead,
        up to ``MAX_RESLOTS`` times; past that (a worker that cannot keep up) its ids stay
        unanswered and are released at the end of the batch for any worker to claim.
        """
        again: list[Job] = []
        with self.lock:
            for job in jobs:
                key = ids_of(job)
                self.reslots[key] = self.reslots.get(key, 0) + 1
                if self.reslots[key] <= MAX_RESLOTS:
                    again.append(job)
            self.report.reslotted += len(again)
        self.follow(again)

    def covered(self, job: Job) -> bool:
        """Whether the leases of the job's ids still cover one whole request started now.

        One that is not is left alone: its ids are released (due again at once) and the next
        dispatch claims them, rather than answering them after another claim may have.
        """
        ids = ids_of(job)
        with self.lock:
            leases = [self.leases[v] for v in ids if v in self.leases]
        if not leases:
            return False
        return self.db_now() + timedelta(seconds=self.rt.settings.request_budget) <= min(leases)

    # -- running one job -----------------------------------------------------------------------

    def execute(self, job: Job) -> None:
        if self.queue.stop.is_set():
            return  # queued behind a 401/429: released with the others, not at lease end
        if isinstance(job, Fetch):
            self._fetch(job)
        else:
            self._list(job)

    def _fetch(self, job: Fetch) -> None:
        sent_at = self.db_now()
        outcome = self.rt.client.fetch(job.video_id)
        self._count("video", outcome)
        self._log(job.video_id, outcome)
        try:
            self._account_wide(outcome)
            apply_answers(self, [(job.video_id, outcome, job.list_seen)], sent_at)
        except SQLAlchemyError as exc:
            store_failed(self, [job.video_id], exc)

    def _list(self, job: ListRead) -> None:
        s = self.rt.settings
        sent_at = self.db_now()
        outcome = self.rt.client.list_videos(job.account, limit=s.list_page_size, offset=job.offset)
        self._count("list", outcome)
        with self.lock:
            self.report.listed += 1
        try:
            self._account_wide(outcome)
            if isinstance(outcome, Page):
                self.follow(read_page(self, job, outcome, sent_at))
            elif isinstance(outcome, Transient):
                # The upstream is struggling: each id takes the error and its backoff, as a
                # failed single-video poll would, rather than multiplying the load by id.
                log_list(job, outcome)
                apply_answers(self, [(v, outcome, None) for v in job.ids], sent_at)
            elif isinstance(outcome, Rejected):
                # The list does not work for this account: fetch by id, now and for a while.
                log_list(job, outcome)
                self.follow([Fetch(v, list_seen=False) for v in job.ids])
            else:
                log_list(job, outcome)
        except SQLAlchemyError as exc:
            store_failed(self, list(job.ids), exc)

    def follow(self, jobs: Sequence[Job]) -> None:
        """Requests this batch learned it needs, on slots of the global limiter."""
        if not jobs:
            return
        s = self.rt.settings
        with self.lock:
            self.missed.update(
                j.video_id for j in jobs if isinstance(j, Fetch) and j.list_seen is False
            )
        lease = timedelta(seconds=s.lease)
        try:
            with self.rt.sessions.begin() as session:
                _, slots = reserve_slots(session, len(jobs), s.rate_limit, self.rt.policy)
                # The batch goes on past the slots it was claimed for: its leases follow.
                renewed = [(ids_of(j), slot + lease) for j, slot in zip(jobs, slots, strict=False)]
                set_leases(session, self.batch.token, renewed)
        except SQLAlchemyError as exc:
            event(log, logging.WARNING, "slots_not_reserved", error=describe_error(exc))
            return  # their ids stay unanswered and are released
        with self.lock:
            for ids_, until in renewed:
                self.leases.update((v, until) for v in ids_ if v in self.leases)
        for job, slot in zip(jobs, slots, strict=False):
            self.queue.push(self.mono_at(slot), job)

    def _account_wide(self, outcome: Outcome | ListOutcome) -> None:
        """401 and 429 concern every id: pause everyone, in the shared control row."""
        policy = self.rt.policy
        if isinstance(outcome, Unauthorized):
            self.halt()
            with self.rt.sessions.begin() as session:
                until = note_unauthorized(session, outcome.message, policy)
            self._pause(until)
            event(log, logging.ERROR, "auth_rejected", paused_until=until.isoformat())
        elif isinstance(outcome, RateLimited):
            self.halt()
            with self.rt.sessions.begin() as session:
                until = note_rate_limited(session, outcome.retry_after, policy)
            self._pause(until)
            event(log, logging.WARNING, "rate_limited", throttled_until=until.isoformat())
        elif self.auth_failing and not isinstance(outcome, Transient):
            with self.rt.sessions.begin() as session:
                note_auth_ok(session)
            self.auth_failing = False
            event(log, logging.INFO, "auth_ok")

    def _pause(self, until: datetime) -> None:
        with self.lock:
            if self.pause_until is None or until > self.pause_until:
                self.pause_until = until

    def _count(self, endpoint: str, outcome: Outcome | ListOutcome) -> None:
        metrics.record_request(endpoint, kind_of(outcome), outcome.latency)
        with self.lock:
            self.report.polled += 1
            self.report.counts.add(outcome)

    def _log(self, video_id: str, outcome: Outcome) -> None:
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
    """Send each request of the batch at its slot (bounded concurrency) and apply the answers.

    A list page may call for more requests (the next page, a record to fetch by id); they get
    slots of their own from the global limiter and run in the same batch.
    """
    s = rt.settings
    run = BatchRun(rt, batch)
    ids = batch.ids
    # Anchor the monotonic clock *before* the query that reads the database time: measured
    # after it (and its commit), a slow machine would date every answer too early.
    before = time.monotonic()
    with rt.sessions.begin() as session:
        now, run.rows, run.auth_failing = owned_rows(session, batch.token, ids, 0.0)
    run.db_start, run.mono_start = now, before
    run.leases = {v: row.claimed_until for v, row in run.rows.items() if row.claimed_until}
    run.report.stale = len(ids) - len(run.rows)
    if not run.rows:
        event(log, logging.INFO, "stale_batch_skipped", ids=len(ids))
        return run.report
    run.unanswered = set(run.rows)
    run.knowledge = KNOWLEDGE.get(rt)

    late = (now - batch.start).total_seconds()
    for video_id, offset in batch.items:
        if video_id in run.rows:
            run.queue.push(run.mono_start + offset - late, Fetch(video_id))
    for account, offset, list_ids, start in batch.lists:
        owned = tuple(v for v in list_ids if v in run.rows)
        if owned:
            depth = listing.chain_depth(len(owned), s.list_page_size, s.list_max_pages)
            run.queue.push(
                run.mono_start + offset - late, ListRead(account, owned, start, 1, depth)
            )
    spacing = batch.spacing or 1.0 / s.rate_limit
    tolerance = late_tolerance(spacing)
    # A request starts only when a thread is free to send it at once, within ``tolerance`` of
    # its slot, and never closer than one slot to any other request of this process (PACER is
    # shared by every batch running here). One that cannot (the message came late, the
    # threads are busy, the machine is slow) takes a new slot rather than firing late.
    free = threading.BoundedSemaphore(s.poll_concurrency)
    with ThreadPoolExecutor(s.poll_concurrency, thread_name_prefix="poll") as pool:
        while (next_job := run.queue.next_job()) is not None:
            slot_at, job = next_job
            while not (acquired := free.acquire(timeout=0.5)):
                if run.queue.stop.is_set():
                    break
            if not acquired:
                run.queue.finished()
                break
            start_at = PACER.reserve(slot_at, spacing, latest=slot_at + tolerance)
            if start_at is not None and run.queue.stop.wait(max(0.0, start_at - time.monotonic())):
                free.release()
                run.queue.finished()
                break
            if start_at is None or time.monotonic() - slot_at > tolerance or not run.covered(job):
                free.release()
                run.reslot(run.queue.take_late(job, tolerance))
                run.queue.finished()
                continue
            pool.submit(_guarded, run, job, free)
    with run.lock:
        unsent = sorted(run.unanswered)
    _release(rt, run, unsent)
    try:
        with rt.sessions.begin() as session:
            add_poll_counts(session, run.report.counts)
    except SQLAlchemyError as exc:
        event(log, logging.WARNING, "counts_not_stored", error=describe_error(exc))
    return run.report


def _guarded(run: BatchRun, job: Job, free: threading.BoundedSemaphore) -> None:
    try:
        run.execute(job)
    except Exception as exc:  # noqa: BLE001 - a thread must never die silently
        # Its ids are not released to be polled again at once: they pay an error and back off.
        job_failed(run, ids_of(job), exc)
    finally:
        free.release()
        run.queue.finished()


def _release(rt: Runtime, run: BatchRun, unsent: Sequence[str]) -> None:
    if not unsent:
        return
    missed = sorted(run.missed.intersection(unsent))
    try:
        with rt.sessions.begin() as session:
            if missed:
                note_list_missed(session, run.batch.token, missed)
            run.report.released = release(session, run.batch.token, unsent, run.pause_until)
        event(log, logging.INFO, "released", ids=len(unsent), until=str(run.pause_until))
    except SQLAlchemyError as exc:
        event(log, logging.WARNING, "release_failed", ids=len(unsent), error=describe_error(exc))

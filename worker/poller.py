"""Dispatch and poll, the I/O around the rules: claim due ids, ask the upstream at each slot,
apply every answer.

Celery-free, so the same code runs in tasks, benchmarks and tests. Tasks in ``tasks.py`` only
pass ids and call these functions.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from pixverse_tracker import metrics
from pixverse_tracker.db.claim import adopt, owned_rows, set_leases
from pixverse_tracker.db.control import add_poll_counts, note_auth_ok
from pixverse_tracker.db.engines import describe_error, is_unavailable
from pixverse_tracker.db.videos import note_list_missed, note_list_offsets, release
from pixverse_tracker.logs import event
from pixverse_tracker.rules import listing, schedule
from pixverse_tracker.rules.decide import decide, not_applied
from pixverse_tracker.rules.outcomes import (
    Listed,
    ListOutcome,
    Outcome,
    Page,
    PollCounts,
    RateLimited,
    Record,
    Rejected,
    Transient,
    Unauthorized,
    kind_of,
)
from pixverse_tracker.rules.row import Decision, RowView
from pixverse_tracker.rules.state import State
from pixverse_tracker.runtime import Runtime
from pixverse_tracker.service.apply import apply
from pixverse_tracker.service.claim import claim_due
from pixverse_tracker.service.knowledge import knowledge
from pixverse_tracker.service.limiter import note_rate_limited, note_unauthorized, reserve_slots

log = logging.getLogger("tracker.poll")
_rng = random.SystemRandom()


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


@dataclass(frozen=True)
class _Fetch:
    """Ask for one video by id."""

    video_id: str
    list_seen: bool | None = None  # True: a list said it finished; False: the list missed it


@dataclass(frozen=True)
class _List:
    """Read one page of an account's list, to answer for ``ids``.

    ``depth`` is how many pages the chain may read in all (this one included) before the ids
    it has not found are fetched by id: enough for every id to be on a page of its own.
    """

    account: str
    ids: tuple[str, ...]
    offset: int = 0
    page: int = 1
    depth: int = 1


_Job = _Fetch | _List


class KnowledgeCache:
    """The schedule's view of our own table (knowledge), re-read now and then.

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


class _BatchRun:
    """State shared by the threads of one poll batch."""

    def __init__(self, rt: Runtime, batch: Batch) -> None:
        self.rt = rt
        self.batch = batch
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.stop = threading.Event()
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
        self.jobs: list[tuple[float, int, _Job]] = []  # a heap, by monotonic start time
        self.reslots: dict[tuple[str, ...], int] = {}  # late starts, by the job's ids
        self.order = itertools.count()
        self.running = 0
        self.knowledge: schedule.Knowledge | None = None
        self.db_start: datetime = batch.start
        self.mono_start = time.monotonic()

    def db_now(self) -> datetime:
        """The database's clock, advanced by our own monotonic clock: skew-proof, no query."""
        return self.db_start + timedelta(seconds=time.monotonic() - self.mono_start)

    def mono_at(self, when: datetime) -> float:
        return self.mono_start + (when - self.db_start).total_seconds()

    # -- the job queue -------------------------------------------------------------------------

    def push(self, at: float, job: _Job) -> None:
        with self.wake:
            heapq.heappush(self.jobs, (at, next(self.order), job))
            self.wake.notify_all()

    def next_job(self) -> tuple[float, _Job] | None:
        """The next job once its time has come; None when all is done or stopped."""
        with self.wake:
            while not self.stop.is_set():
                if not self.jobs:
                    if self.running == 0:
                        return None
                    self.wake.wait(0.5)  # a running job may still add follow-ups
                    continue
                at = self.jobs[0][0]
                wait = at - time.monotonic()
                if wait > 0:
                    self.wake.wait(min(wait, 0.5))  # an earlier job may arrive meanwhile
                    continue
                at, _, job = heapq.heappop(self.jobs)
                self.running += 1
                return at, job
            return None

    def finished(self) -> None:
        with self.wake:
            self.running -= 1
            self.wake.notify_all()

    def halt(self) -> None:
        self.stop.set()
        with self.wake:
            self.wake.notify_all()

    def take_late(self, job: _Job, tolerance: float) -> list[_Job]:
        """``job`` and every queued job already more than ``tolerance`` past its slot."""
        now = time.monotonic()
        with self.wake:
            late = [entry for entry in self.jobs if entry[0] + tolerance < now]
            if late:
                self.jobs = [entry for entry in self.jobs if entry[0] + tolerance >= now]
                heapq.heapify(self.jobs)
        return [job] + [j for _, _, j in late]

    def reslot(self, jobs: Sequence[_Job]) -> None:
        """Give requests that missed their slots new ones (and leases to match).

        A request fired late would meet the next slot's request from another worker, two at
        once where the limiter booked one; a request sent after its lease could answer an id
        another claim holds. So a late one takes a fresh slot from the global limiter instead,
        up to ``MAX_RESLOTS`` times; past that (a worker that cannot keep up) its ids stay
        unanswered and are released at the end of the batch for any worker to claim.
        """
        again: list[_Job] = []
        with self.lock:
            for job in jobs:
                key = _ids_of(job)
                self.reslots[key] = self.reslots.get(key, 0) + 1
                if self.reslots[key] <= MAX_RESLOTS:
                    again.append(job)
            self.report.reslotted += len(again)
        self._follow(again)

    def covered(self, job: _Job) -> bool:
        """Whether the leases of the job's ids still cover one whole request started now.

        One that is not is left alone: its ids are released (due again at once) and the next
        dispatch claims them, rather than answering them after another claim may have.
        """
        ids = _ids_of(job)
        with self.lock:
            leases = [self.leases[v] for v in ids if v in self.leases]
        if not leases:
            return False
        return self.db_now() + timedelta(seconds=self.rt.settings.request_budget) <= min(leases)

    # -- running one job -----------------------------------------------------------------------

    def execute(self, job: _Job) -> None:
        if self.stop.is_set():
            return  # queued behind a 401/429: released with the others, not at lease end
        if isinstance(job, _Fetch):
            self._fetch(job)
        else:
            self._list(job)

    def _fetch(self, job: _Fetch) -> None:
        sent_at = self.db_now()
        outcome = self.rt.client.fetch(job.video_id)
        self._count("video", outcome)
        self._log(job.video_id, outcome)
        try:
            self._account_wide(outcome)
            self._apply([(job.video_id, outcome, job.list_seen)], sent_at)
        except SQLAlchemyError as exc:
            self._store_failed([job.video_id], exc)

    def _list(self, job: _List) -> None:
        s = self.rt.settings
        sent_at = self.db_now()
        outcome = self.rt.client.list_videos(job.account, limit=s.list_page_size, offset=job.offset)
        self._count("list", outcome)
        with self.lock:
            self.report.listed += 1
        try:
            self._account_wide(outcome)
            if isinstance(outcome, Page):
                self._read_page(job, outcome, sent_at)
            elif isinstance(outcome, Transient):
                # The upstream is struggling: each id takes the error and its backoff, as a
                # failed single-video poll would, rather than multiplying the load by id.
                self._log_list(job, outcome)
                self._apply([(v, outcome, None) for v in job.ids], sent_at)
            elif isinstance(outcome, Rejected):
                # The list does not work for this account: fetch by id, now and for a while.
                self._log_list(job, outcome)
                self._follow([_Fetch(v, list_seen=False) for v in job.ids])
            else:
                self._log_list(job, outcome)
        except SQLAlchemyError as exc:
            self._store_failed(list(job.ids), exc)

    def _read_page(self, job: _List, page: Page, sent_at: datetime) -> None:
        entries = listing.entries_of(job.account, page.entries)
        answers: list[tuple[str, Outcome, bool | None]] = []
        follow: list[_Job] = []
        missing: list[str] = []
        for video_id in job.ids:
            found = entries.get(video_id)
            if found is None:
                missing.append(video_id)
            else:
                self._read_entry(video_id, found, page, answers, follow)
        # Finished videos on the page that this batch did not claim: answer them now rather
        # than at their own next poll (a claim elsewhere keeps them; see adopt).
        with self.lock:
            mine = set(self.rows)
        finished: list[str] = []
        in_progress: list[str] = []
        for v, e in entries.items():
            if v not in mine:
                done = listing.read_entry(e) is not listing.Finding.IN_PROGRESS
                (finished if done else in_progress).append(v)
        adopted = self._adopt(finished) if finished else {}
        # Others of ours still in progress here learn their page, and say the chain is in a
        # run of our videos (a burst deeper than the ids asked about): it may go on past its
        # depth while pages hold them, so that the run is read once from the top.
        ours_here = self._note_offsets(in_progress, page.offset) if in_progress else 0
        for video_id in sorted(adopted):
            self._read_entry(video_id, entries[video_id], page, answers, follow)
        self._log_list(job, page, found=len(job.ids) - len(missing), adopted=len(adopted))
        if answers:
            # The ids this request showed in progress will be looked at again together, by one
            # request: the schedule weighs that request's chance of finding one finished.
            share = sum(isinstance(outcome, Listed) for _, outcome, _ in answers)
            self._apply(answers, sent_at, share=share, list_offset=page.offset)
        if missing:
            deeper = job.page < job.depth or (ours_here and job.page < listing.MAX_CHAIN_PAGES)
            if page.next_offset is not None and deeper:
                follow.append(
                    _List(job.account, tuple(missing), page.next_offset, job.page + 1, job.depth)
                )
            else:
                follow.extend(_Fetch(v, list_seen=False) for v in missing)
        self._follow(follow)

    def _note_offsets(self, video_ids: list[str], offset: int) -> int:
        try:
            with self.rt.sessions.begin() as session:
                return note_list_offsets(session, video_ids, offset)
        except SQLAlchemyError as exc:
            # Only a head start is lost: they learn their page at their own next read.
            event(log, logging.WARNING, "offsets_not_noted", error=describe_error(exc))
            return 0

    def _adopt(self, video_ids: list[str]) -> dict[str, RowView]:
        try:
            with self.rt.sessions.begin() as session:
                adopted = adopt(session, self.batch.token, video_ids, self.rt.settings.lease)
        except SQLAlchemyError as exc:
            # Only a head start is lost: those videos are found at their own next poll.
            event(
                log, logging.WARNING, "adopt_failed", ids=len(video_ids), error=describe_error(exc)
            )
            return {}
        with self.lock:
            self.rows.update(adopted)
            self.leases.update(
                (v, row.claimed_until) for v, row in adopted.items() if row.claimed_until
            )
            self.unanswered.update(adopted)
            self.report.adopted += len(adopted)
        return adopted

    @staticmethod
    def _read_entry(
        video_id: str,
        entry: dict[str, Any],
        page: Page,
        answers: list[tuple[str, Outcome, bool | None]],
        follow: list[_Job],
    ) -> None:
        finding = listing.read_entry(entry)
        if finding is listing.Finding.IN_PROGRESS:
            answers.append((video_id, Listed(entry, latency=page.latency), True))
        elif finding is listing.Finding.FINAL:
            answers.append((video_id, Record(entry, latency=page.latency), True))
        else:
            follow.append(_Fetch(video_id, list_seen=True))

    def _follow(self, jobs: Sequence[_Job]) -> None:
        """Requests this batch learned it needs, on slots of the global limiter."""
        if not jobs:
            return
        s = self.rt.settings
        with self.lock:
            self.missed.update(
                j.video_id for j in jobs if isinstance(j, _Fetch) and j.list_seen is False
            )
        lease = timedelta(seconds=s.lease)
        try:
            with self.rt.sessions.begin() as session:
                _, slots = reserve_slots(session, len(jobs), s.rate_limit, self.rt.policy)
                # The batch goes on past the slots it was claimed for: its leases follow.
                renewed = [(_ids_of(j), slot + lease) for j, slot in zip(jobs, slots, strict=False)]
                set_leases(session, self.batch.token, renewed)
        except SQLAlchemyError as exc:
            event(log, logging.WARNING, "slots_not_reserved", error=describe_error(exc))
            return  # their ids stay unanswered and are released
        with self.lock:
            for ids_, until in renewed:
                self.leases.update((v, until) for v in ids_ if v in self.leases)
        for job, slot in zip(jobs, slots, strict=False):
            self.push(self.mono_at(slot), job)

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

    def _grid(self, row: RowView, list_seen: bool | None) -> schedule.Grid | None:
        if list_seen is False:
            return None
        missed = None if list_seen else row.list_missed_at
        return listing.grid_for(row.video_id, missed, self.db_now(), self.rt.policy)

    def _apply(
        self,
        answers: Sequence[tuple[str, Outcome, bool | None]],
        sent_at: datetime,
        share: int = 1,
        list_offset: int | None = None,
    ) -> None:
        """Write the answers, in one transaction (one list page answers for many ids; then
        ``list_offset`` is that page's, where the next list read of those ids starts).

        An answer that cannot be applied (the rules or the database raise) costs its id an
        error and a backoff (``decide.not_applied``) and one log line; the others go on.
        Only a database that is unavailable raises (SQLAlchemyError: ``_store_failed``).
        """
        decisions = []
        for video_id, outcome, list_seen in answers:
            row = self.rows[video_id]
            try:
                decision = decide(
                    row,
                    outcome,
                    self.db_now(),
                    self.rt.policy,
                    _rng,
                    sent_at,
                    knowledge=self.knowledge,
                    grid=self._grid(row, list_seen),
                    list_seen=list_seen,
                    list_offset=list_offset,
                    share=share,
                )
            except Exception as exc:  # noqa: BLE001 - an answer the rules did not foresee
                decision = self._not_applied(video_id, exc, sent_at, outcome.http_status)
            decisions.append((video_id, decision, row.callback_url or self.rt.settings.webhook_url))
        try:
            applied = self._write(decisions, sent_at)
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and is_unavailable(exc):
                raise
            # Something in these answers was refused: each on its own, so only its id pays.
            applied = [self._write_alone(item, sent_at) for item in decisions]
        with self.lock:
            for (video_id, _, _), ok in zip(decisions, applied, strict=True):
                self.unanswered.discard(video_id)
                if ok:
                    self.report.applied += 1
                else:
                    self.report.stale += 1
        for (video_id, decision, _), ok in zip(decisions, applied, strict=True):
            self._log_decision(video_id, decision, ok)

    def _write(
        self, decisions: Sequence[tuple[str, Decision, str | None]], sent_at: datetime
    ) -> list[bool]:
        with self.rt.sessions.begin() as session:
            return [apply(session, v, self.batch.token, d, url, sent_at) for v, d, url in decisions]

    def _write_alone(self, item: tuple[str, Decision, str | None], sent_at: datetime) -> bool:
        video_id, decision, url = item
        try:
            return self._write([item], sent_at)[0]
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and is_unavailable(exc):
                raise
            http_status = decision.changes.get("last_http_status")
            failed = self._not_applied(video_id, exc, sent_at, http_status)
        return self._write([(video_id, failed, url)], sent_at)[0]

    def _not_applied(
        self, video_id: str, exc: BaseException, sent_at: datetime, http_status: int | None
    ) -> Decision:
        """The decision for an answer that raised: one log line, never a traceback per poll
        (it is at DEBUG, for whoever hunts the bug), and an error with backoff for the row."""
        reason = _describe(exc)
        event(log, logging.ERROR, "answer_not_applied", video_id=video_id, error=reason)
        log.debug("answer_not_applied traceback", exc_info=exc)
        return not_applied(
            self.rows[video_id], reason, self.db_now(), self.rt.policy, _rng, sent_at, http_status
        )

    def not_applied(self, video_ids: Sequence[str], exc: BaseException) -> None:
        """A job that raised before its answers were applied: those still unanswered take an
        error and a backoff, as ``_apply`` gives one answer that raised (not a free retry)."""
        with self.lock:
            held = [v for v in video_ids if v in self.unanswered]
        sent_at = self.db_now()
        webhook_url = self.rt.settings.webhook_url
        try:
            decisions = [
                (
                    v,
                    self._not_applied(v, exc, sent_at, None),
                    self.rows[v].callback_url or webhook_url,
                )
                for v in held
            ]
            applied = self._write(decisions, sent_at)
        except Exception as failure:  # noqa: BLE001 - the last resort: their leases recover them
            self._store_failed(held, failure)
            return
        with self.lock:
            self.unanswered.difference_update(held)
            self.report.applied += sum(applied)
            self.report.stale += len(applied) - sum(applied)

    def _store_failed(self, video_ids: Sequence[str], exc: Exception) -> None:
        # The answers are lost but not the ids: they keep their claim until the lease runs
        # out and are polled again then.
        with self.lock:
            self.report.failed_to_store += len(video_ids)
            self.unanswered.difference_update(video_ids)
        for video_id in video_ids:
            event(log, logging.ERROR, "store_failed", video_id=video_id, error=describe_error(exc))

    def _count(self, endpoint: str, outcome: Outcome | ListOutcome) -> None:
        metrics.record_request(endpoint, kind_of(outcome), outcome.latency)
        with self.lock:
            self.report.polled += 1
            self.report.counts.add(outcome)

    def _log_decision(self, video_id: str, decision: Decision, applied: bool) -> None:
        if not applied:
            event(log, logging.WARNING, "stale_answer_dropped", video_id=video_id)
        if decision.anomaly:
            event(log, logging.WARNING, "anomaly", video_id=video_id, detail=decision.anomaly)
        if decision.state is not State.PENDING and applied:
            metrics.record_finished(decision.state.value)
            event(
                log,
                logging.INFO,
                decision.state.value,
                video_id=video_id,
                reason=decision.changes.get("abandon_reason")
                or decision.changes.get("status_name"),
            )

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

    def _log_list(self, job: _List, outcome: ListOutcome, **extra: object) -> None:
        level = logging.INFO if isinstance(outcome, Page) else logging.WARNING
        fields: dict[str, object] = {
            "account": job.account,
            "offset": job.offset,
            "ids": len(job.ids),
            "outcome": kind_of(outcome),
            "http_status": outcome.http_status,
            "latency": outcome.latency,
            **extra,
        }
        if isinstance(outcome, Page):
            fields["entries"] = len(outcome.entries)
        elif isinstance(outcome, Transient):
            fields["reason"] = outcome.reason
        elif isinstance(outcome, Rejected):
            fields["reason"] = outcome.message
        event(log, level, "list", **fields)


def poll_batch(rt: Runtime, batch: Batch) -> BatchReport:
    """Send each request of the batch at its slot (bounded concurrency) and apply the answers.

    A list page may call for more requests (the next page, a record to fetch by id); they get
    slots of their own from the global limiter and run in the same batch.
    """
    s = rt.settings
    run = _BatchRun(rt, batch)
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
            run.push(run.mono_start + offset - late, _Fetch(video_id))
    for account, offset, list_ids, start in batch.lists:
        owned = tuple(v for v in list_ids if v in run.rows)
        if owned:
            depth = listing.chain_depth(len(owned), s.list_page_size, s.list_max_pages)
            run.push(run.mono_start + offset - late, _List(account, owned, start, 1, depth))
    spacing = batch.spacing or 1.0 / s.rate_limit
    tolerance = late_tolerance(spacing)
    # A request starts only when a thread is free to send it at once, within ``tolerance`` of
    # its slot, and never closer than one slot to any other request of this process (PACER is
    # shared by every batch running here). One that cannot (the message came late, the
    # threads are busy, the machine is slow) takes a new slot rather than firing late.
    free = threading.BoundedSemaphore(s.poll_concurrency)
    with ThreadPoolExecutor(s.poll_concurrency, thread_name_prefix="poll") as pool:
        while (next_job := run.next_job()) is not None:
            slot_at, job = next_job
            while not (acquired := free.acquire(timeout=0.5)):
                if run.stop.is_set():
                    break
            if not acquired:
                run.finished()
                break
            start_at = PACER.reserve(slot_at, spacing, latest=slot_at + tolerance)
            if start_at is not None and run.stop.wait(max(0.0, start_at - time.monotonic())):
                free.release()
                run.finished()
                break
            if start_at is None or time.monotonic() - slot_at > tolerance or not run.covered(job):
                free.release()
                run.reslot(run.take_late(job, tolerance))
                run.finished()
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


# How many times one request may miss its slot and take a new one within a batch.
MAX_RESLOTS = 3


def late_tolerance(spacing: float) -> float:
    """How late after its slot a request may still start (seconds).

    Under one slot, a late request never puts more than rate + 1 requests in any second (the
    slots are 1/rate apart); half a slot leaves room for the next one's own jitter. At high
    rates half a slot is a few milliseconds, less than a busy machine's thread wake-up, so
    25 ms is the least: a request then meets at most a few slots' worth of others.
    """
    return max(spacing / 2, 0.025)


class Pacer:
    """Hands out request start times at least ``spacing`` apart, across threads (monotonic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_free = -math.inf

    def reserve(self, not_before: float, spacing: float, latest: float = math.inf) -> float | None:
        """The start time for a request due at ``not_before``, or None (nothing reserved)
        when this process could not start it by ``latest``."""
        with self._lock:
            start = max(not_before, self._next_free)
            if start > latest:
                return None
            self._next_free = start + spacing
            return start


PACER = Pacer()  # one per process: every batch a worker runs shares it


def _ids_of(job: _Job) -> tuple[str, ...]:
    return (job.video_id,) if isinstance(job, _Fetch) else job.ids


def _guarded(run: _BatchRun, job: _Job, free: threading.BoundedSemaphore) -> None:
    try:
        run.execute(job)
    except Exception as exc:  # noqa: BLE001 - a thread must never die silently
        # Its ids are not released to be polled again at once: they pay an error and back off.
        run.not_applied(_ids_of(job), exc)
    finally:
        free.release()
        run.finished()


def _describe(exc: BaseException) -> str:
    """One line about an exception: its type and the first line of its message, bounded."""
    text = describe_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _release(rt: Runtime, run: _BatchRun, unsent: Sequence[str]) -> None:
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

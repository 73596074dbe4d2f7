"""Reading one page of an account's list for a poll batch: the ids it shows are answered (and
finished videos the batch had not claimed are adopted), the others are followed to the next
page or fetched by id."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from pixverse_tracker.db.claim import adopt
from pixverse_tracker.db.engines import describe_error
from pixverse_tracker.db.videos import note_list_offsets
from pixverse_tracker.logs import event
from pixverse_tracker.rules import listing
from pixverse_tracker.rules.outcomes import (
    Listed,
    ListOutcome,
    Outcome,
    Page,
    Record,
    Rejected,
    Transient,
    kind_of,
)
from pixverse_tracker.rules.row import RowView
from pixverse_tracker.service.answers import apply_answers
from pixverse_tracker.service.batch_state import BatchState
from pixverse_tracker.service.job_queue import Fetch, Job, ListRead

log = logging.getLogger("tracker.poll")


def read_page(run: BatchState, job: ListRead, page: Page, sent_at: datetime) -> list[Job]:
    """Apply what ``page`` says about the job's ids; returns the requests it calls for (the
    next page for ids not on it, fetches by id for records the page does not carry)."""
    entries = listing.entries_of(job.account, page.entries)
    answers: list[tuple[str, Outcome, bool | None]] = []
    follow: list[Job] = []
    missing: list[str] = []
    for video_id in job.ids:
        found = entries.get(video_id)
        if found is None:
            missing.append(video_id)
        else:
            _read_entry(video_id, found, page, answers, follow)
    # Finished videos on the page that this batch did not claim: answer them now rather
    # than at their own next poll (a claim elsewhere keeps them; see adopt).
    with run.lock:
        mine = set(run.rows)
    finished: list[str] = []
    in_progress: list[str] = []
    for v, e in entries.items():
        if v not in mine:
            done = listing.read_entry(e) is not listing.Finding.IN_PROGRESS
            (finished if done else in_progress).append(v)
    adopted = _adopt(run, finished) if finished else {}
    # Others of ours still in progress here learn their page, and say the chain is in a
    # run of our videos (a burst deeper than the ids asked about): it may go on past its
    # depth while pages hold them, so that the run is read once from the top.
    ours_here = _note_offsets(run, in_progress, page.offset) if in_progress else 0
    for video_id in sorted(adopted):
        _read_entry(video_id, entries[video_id], page, answers, follow)
    log_list(job, page, found=len(job.ids) - len(missing), adopted=len(adopted))
    if answers:
        # The ids this request showed in progress will be looked at again together, by one
        # request: the schedule weighs that request's chance of finding one finished.
        share = sum(isinstance(outcome, Listed) for _, outcome, _ in answers)
        apply_answers(run, answers, sent_at, share=share, list_offset=page.offset)
    if missing:
        deeper = job.page < job.depth or (ours_here and job.page < listing.MAX_CHAIN_PAGES)
        if page.next_offset is not None and deeper:
            follow.append(
                ListRead(job.account, tuple(missing), page.next_offset, job.page + 1, job.depth)
            )
        else:
            follow.extend(Fetch(v, list_seen=False) for v in missing)
    return follow


def _note_offsets(run: BatchState, video_ids: list[str], offset: int) -> int:
    try:
        with run.rt.sessions.begin() as session:
            return note_list_offsets(session, video_ids, offset)
    except SQLAlchemyError as exc:
        # Only a head start is lost: they learn their page at their own next read.
        event(log, logging.WARNING, "offsets_not_noted", error=describe_error(exc))
        return 0


def _adopt(run: BatchState, video_ids: list[str]) -> dict[str, RowView]:
    try:
        with run.rt.sessions.begin() as session:
            adopted = adopt(session, run.batch.token, video_ids, run.rt.settings.lease)
    except SQLAlchemyError as exc:
        # Only a head start is lost: those videos are found at their own next poll.
        event(log, logging.WARNING, "adopt_failed", ids=len(video_ids), error=describe_error(exc))
        return {}
    with run.lock:
        run.rows.update(adopted)
        run.leases.update((v, row.claimed_until) for v, row in adopted.items() if row.claimed_until)
        run.unanswered.update(adopted)
        run.report.adopted += len(adopted)
    return adopted


def _read_entry(
    video_id: str,
    entry: dict[str, Any],
    page: Page,
    answers: list[tuple[str, Outcome, bool | None]],
    follow: list[Job],
) -> None:
    finding = listing.read_entry(entry)
    if finding is listing.Finding.IN_PROGRESS:
        answers.append((video_id, Listed(entry, latency=page.latency), True))
    elif finding is listing.Finding.FINAL:
        answers.append((video_id, Record(entry, latency=page.latency), True))
    else:
        follow.append(Fetch(video_id, list_seen=True))


def log_list(job: ListRead, outcome: ListOutcome, **extra: object) -> None:
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

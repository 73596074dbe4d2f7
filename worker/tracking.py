"""The pure rules: what an upstream answer means for a tracked row, and when to poll next.

No I/O here. ``store.py`` feeds these functions a snapshot of the row and the database's clock,
and writes back whatever ``Decision`` they return.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from pixverse_tracker import records, schedule
from pixverse_tracker.models import State
from pixverse_tracker.outcomes import (
    Deleted,
    Listed,
    ListOutcome,
    NotYet,
    Outcome,
    RateLimited,
    Record,
    Rejected,
    SchedulerOutcome,
    Transient,
    Unauthorized,
    kind_of,
)

COMPLETED = 1
TERMINAL_FAILURES = {6: "DELETED", 7: "MODERATED", 8: "FAILED"}
KNOWN_NAMES = {
    "COMPLETED": 1,
    "QUEUED": 5,
    "DELETED": 6,
    "MODERATED": 7,
    "FAILED": 8,
    "GENERATING": 10,
    "PROCESSING": 10,
}
# Past the give-up deadline, answers that tell us nothing (5xx, timeouts) are retried this much
# longer, so an upstream outage at the wrong moment does not expire videos that may be done.
ERROR_GRACE = timedelta(hours=1)
MESSAGE_LIMIT = 500
MIN_RATE_FACTOR = 0.05


@dataclass(frozen=True)
class Policy:
    """The timing knobs the rules need (a slice of Settings, so rules stay free of the env)."""

    first_poll_delay: float = 15.0
    poll_interval_min: float = 15.0
    poll_interval_max: float = 15.0
    jitter: float = 0.2
    give_up_after: float = 6 * 3600.0
    auth_pause: float = 60.0
    rate_limit_pause: float = 15.0
    rate_recovery: float = 60.0
    slow_after: float = 1800.0
    slow_interval: float = 300.0
    # "adaptive" (worker/schedule.py, once the table has enough finished videos) or "backoff"
    schedule: str = "adaptive"
    # The per-account grid period for ids read through the list endpoint; None: no list.
    list_interval: float | None = None
    # How long an id the list did not show is fetched by id before the list is tried again.
    list_retry: float = 3600.0
    # The median completion time assumed until the table has observed enough (schedule.prior_for)
    typical_duration: float = 90.0


@dataclass(frozen=True)
class RowView:
    """What the rules need to know about a pending row (read under its row lock)."""

    video_id: str
    enqueued_at: datetime
    poll_count: int = 0
    error_count: int = 0
    status_code: int | None = None
    has_record: bool = False
    callback_url: str | None = None
    record_sha: str | None = None
    started_at: datetime | None = None
    list_missed_at: datetime | None = None
    last_polled_at: datetime | None = None
    claimed_until: datetime | None = None  # the claim's lease on it, while claimed
    list_offset: int | None = None  # the list page that last showed it


@dataclass(frozen=True)
class EventSpec:
    kind: str
    message: str | None = None
    http_status: int | None = None
    status_code: int | None = None
    status_name: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to write for one answer: new state, column values, history, and side effects."""

    state: State
    changes: dict[str, Any]
    events: tuple[EventSpec, ...] = ()
    notify_done: bool = False
    # Why we logged something noteworthy (anomalies); None when the answer was unremarkable.
    anomaly: str | None = None
    pause: str | None = None  # "auth" or "rate": the answer concerns every id, not this one
    retry_after: float | None = None


# --- reading a record --------------------------------------------------------------------------


class Verdict(Enum):
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    ANOMALY = "anomaly"


INT32 = range(-(2**31), 2**31)  # the typed integer columns are 32-bit


def _as_int(value: Any) -> int | None:
    """An integer that fits the column, or None: hostile values never fail a write."""
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and len(value) < 32:
        try:
            number = int(value.strip())
        except ValueError:
            return None
    return number if number is not None and number in INT32 else None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # OverflowError: a 400-digit JSON integer
        return None
    return number if math.isfinite(number) else None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def _as_text(value: Any) -> str | None:
    return clean_text(value) if isinstance(value, str) else None


def clean_text(text: str) -> str:
    """Text every column can store (``records.clean_text``): no NUL, no lone surrogate."""
    return records.clean_text(text)


def clean_json(value: Any) -> Any:
    """The record as received, within the bounds of ``records.clean``: no NUL, no NaN, no
    container nested deeper than ``records.MAX_DEPTH`` (replaced by ``records.PRUNED``)."""
    return records.clean(value)


def status_of(record: dict[str, Any]) -> tuple[int | None, str | None, bool | None]:
    """(code, name, final flag); numbers-as-strings coerced, a missing code read off the name."""
    code = _as_int(record.get("video_status"))
    name = _as_text(record.get("video_status_name"))
    if code is None and name is not None:
        code = KNOWN_NAMES.get(name.strip().upper())
    return code, name, _as_bool(record.get("video_status_final"))


def judge(record: dict[str, Any]) -> tuple[Verdict, str | None]:
    """Is this record really final? ``video_status_final`` alone is not proof (upstream.md)."""
    code, name, final = status_of(record)
    url = (_as_text(record.get("url")) or "").strip()
    label = name or (f"status {code}" if code is not None else "no status")
    if final is False:
        if code == COMPLETED or code in TERMINAL_FAILURES:
            return Verdict.ANOMALY, f"{label} says it is not final; polling on"
        return Verdict.IN_PROGRESS, None
    # final is True, or absent (then the status code alone decides).
    if code == COMPLETED:
        if media_url(url) is not None:
            return Verdict.SUCCESS, None
        if url:
            # javascript:, data:, http:// ...: nothing an application should be handed to fetch
            scheme = url.partition(":")[0][:16] if ":" in url else "no scheme"
            return Verdict.ANOMALY, f"{label} with a url that is not https ({scheme}); polling on"
        return Verdict.ANOMALY, f"{label} without a url; polling on"
    if code in TERMINAL_FAILURES:
        return Verdict.FAILURE, None
    if final is True:
        return Verdict.ANOMALY, f"{label} claims to be final but is not a known final status"
    return Verdict.IN_PROGRESS, None


def media_url(value: Any) -> str | None:
    """The value when it is a URL an application may fetch: ``https`` with a host, else None.

    The media URL is handed on (the ``url`` column, callbacks); ``javascript:``, ``data:``,
    plain ``http://`` and the like are not a finished video's media, whatever the status says.
    """
    text = (_as_text(value) or "").strip()
    if not text or any(ch.isspace() or not ch.isprintable() for ch in text):
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    return text if parts.scheme == "https" and host else None


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON: equal digests, equal records."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def typed_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The typed copies of the fields people filter on; wrong types become NULL, never errors
    (and so do ``url`` and ``first_frame`` unless they are https: ``media_url``)."""
    code, name, final = status_of(record)
    duration = _as_float(record.get("duration"))
    if duration is None:
        duration = _as_float(record.get("video_duration"))
    return {
        "status_code": code,
        "status_name": name,
        "status_final": final,
        "url": media_url(record.get("url")),
        "first_frame": media_url(record.get("first_frame")),
        "prompt": _as_text(record.get("prompt")),
        "model": _as_text(record.get("model")),
        "duration": duration,
        "output_width": _as_int(record.get("output_width")),
        "output_height": _as_int(record.get("output_height")),
        "upstream_created_at": parse_time(record.get("created_at")),
    }


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # a time without a zone is ambiguous; keep it only in the record
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. year 1 with a positive offset
        return None


# --- timing ------------------------------------------------------------------------------------


def backoff_delay(attempt: int, policy: Policy, rng: random.Random, age: float = 0.0) -> float:
    """Capped exponential backoff with jitter, within [min, max] interval.

    Past ``slow_after`` seconds since enqueue the cap rises to ``slow_interval``: almost every
    video has finished by then, and the ones that have not (stalled queues, videos that never
    finish) would otherwise cost a poll a minute for hours.
    """
    low, high = policy.poll_interval_min, policy.poll_interval_max
    if age >= policy.slow_after:
        high = max(high, policy.slow_interval)
    base = min(high, low * 1.5 ** min(attempt, 64))
    floor = max(low, base * (1.0 - policy.jitter))
    return rng.uniform(floor, base) if base > floor else base


def deadline_of(row: RowView, policy: Policy) -> datetime:
    return row.enqueued_at + timedelta(seconds=policy.give_up_after)


def cap_for(age: float, policy: Policy) -> float:
    """The longest gap between two looks at a video of this age."""
    if age >= policy.slow_after:
        return max(policy.poll_interval_max, policy.slow_interval)
    return policy.poll_interval_max


def next_poll(
    row: RowView,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    attempt: int,
    sent_at: datetime | None = None,
    *,
    progress: schedule.Progress | None = None,
    knowledge: schedule.Knowledge | None = None,
    grid: schedule.Grid | None = None,
    share: int = 1,
) -> datetime:
    """The next poll time, never past the deadline, so the last poll lands at the deadline.

    With ``progress`` and ``knowledge`` (and the adaptive schedule) the gap comes from
    ``schedule.adaptive_gap``; otherwise (errors, ``TRACKER_SCHEDULE=backoff``) from backoff.
    On a ``grid`` (ids read through the list) the time snaps to the account's nearest instant,
    so siblings come due together; elsewhere it is jittered, so ids enqueued together drift
    apart. A poll sent before the deadline (even if answered after it) is not the last one:
    the next is placed at the deadline, which may already be due.
    """
    age = (now - row.enqueued_at).total_seconds()
    if policy.schedule == "adaptive" and progress is not None and knowledge is not None:
        floor = grid.period if grid is not None else policy.poll_interval_min
        cap = cap_for(age, policy)
        probability = schedule.share_probability(share if grid is not None else 1)
        gap = schedule.adaptive_gap(progress, knowledge, floor, cap, probability)
        # Past the cap only while a finish is ruled out: that wait is kept exact.
        if grid is None and policy.jitter > 0 and gap <= cap:
            # Around the gap, not below it: ids enqueued together drift apart without the
            # gaps shrinking on average (which would cost calls, as backoff's jitter does).
            spread = policy.jitter / 2
            gap = min(cap, max(floor, gap * rng.uniform(1.0 - spread, 1.0 + spread)))
    else:
        gap = backoff_delay(attempt, policy, rng, age)
    due = now + timedelta(seconds=gap)
    if grid is not None:
        # The instant at or before the due time: a grid never stretches a gap past the cap.
        # Only a gap shorter than the period (an error's backoff) moves on to the next one.
        snapped = grid.at_or_before(due)
        due = snapped if snapped > now else snapped + timedelta(seconds=grid.period)
    deadline = deadline_of(row, policy)
    return min(due, deadline) if (sent_at or now) < deadline else due


def first_poll_at(
    now: datetime,
    policy: Policy,
    knowledge: schedule.Knowledge | None = None,
    grid: schedule.Grid | None = None,
) -> datetime:
    """When a newly enqueued id is first looked at: after ``first_poll_delay`` at the earliest.

    The adaptive schedule waits longer when our table says videos hardly ever finish that
    early; on a grid, the first look is the account's next instant from then on, so it joins
    the list request of the ids already tracked there.
    """
    delay = policy.first_poll_delay
    # Only what was observed may delay the first look: the prior (Knowledge.prior)
    # is a guess, and TRACKER_FIRST_POLL_DELAY is what the operator asked for.
    observed = knowledge is not None and len(knowledge.completion) >= schedule.MIN_SAMPLES
    if policy.schedule == "adaptive" and knowledge is not None and observed:
        cap = max(delay, policy.poll_interval_max)
        delay = schedule.adaptive_gap(schedule.Progress(0.0), knowledge, delay, cap)
    due = now + timedelta(seconds=delay)
    if grid is not None:
        snapped = grid.snap(due)
        due = snapped if snapped >= due else snapped + timedelta(seconds=grid.period)
    return due


def started_since(row: RowView) -> datetime:
    """When a video first seen GENERATING now may have started: right after the look before.

    The earliest moment it can have, so the schedule errs towards looking early; the learned
    generation times are measured from the same point, which keeps both consistent.
    """
    return row.last_polled_at or row.enqueued_at


def progress_of(
    row: RowView, now: datetime, status_code: int | None, entry: dict[str, Any] | None
) -> schedule.Progress:
    """What the schedule needs to know: age, stage, time generating, queue estimate."""
    stage = schedule.stage_of(status_code)
    started = row.started_at
    if stage is schedule.Stage.GENERATING and started is None:
        started = started_since(row)
    return schedule.Progress(
        age=(now - row.enqueued_at).total_seconds(),
        stage=stage,
        generating_for=(now - started).total_seconds() if started is not None else None,
        queue_time=schedule.queue_time_of(entry)
        if entry is not None and stage is schedule.Stage.QUEUED
        else None,
    )


# --- the decision --------------------------------------------------------------------------------


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    text = clean_text(text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _finished(state: State, now: datetime, changes: dict[str, Any]) -> dict[str, Any]:
    changes.update(next_poll_at=None, done_at=now if state is State.DONE else None)
    return changes


def decide(
    row: RowView,
    outcome: Outcome,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    sent_at: datetime | None = None,
    *,
    knowledge: schedule.Knowledge | None = None,
    grid: schedule.Grid | None = None,
    list_seen: bool | None = None,
    list_offset: int | None = None,
    share: int = 1,
) -> Decision:
    """Turn one upstream answer into the row's next state.

    ``now`` is the database's clock when the answer arrived; ``sent_at`` when the request went
    out (default: ``now``). Give-up is judged by ``sent_at``: only a poll *sent* at or past
    the deadline may expire a row. ``knowledge``, ``grid`` and ``share`` feed the next poll
    time (see ``next_poll``); ``list_seen`` says whether a list read showed the id (True),
    missed it (False: it is fetched by id for a while) or was not involved (None);
    ``list_offset`` is the offset of the page that showed it, where its next list read starts.
    """
    sent = sent_at or now
    base: dict[str, Any] = {"updated_at": now, "claimed_until": None, "claim_token": None}
    if list_seen is False:
        # not where we looked: the next list read (after the retry period) starts at the top
        base.update(list_missed_at=now, list_offset=None)
    elif list_seen is True:
        if row.list_missed_at is not None:
            base["list_missed_at"] = None
        if list_offset is not None and list_offset != row.list_offset:
            base["list_offset"] = list_offset

    # Answers about the account, not the video: no penalty, no poll counted.
    if isinstance(outcome, Unauthorized):
        until = now + timedelta(seconds=policy.auth_pause)
        return Decision(
            State.PENDING,
            {**base, "next_poll_at": until, "last_http_status": outcome.http_status},
            pause="auth",
        )
    if isinstance(outcome, RateLimited):
        wait = outcome.retry_after if outcome.retry_after is not None else policy.rate_limit_pause
        until = now + timedelta(seconds=max(wait, policy.poll_interval_min))
        return Decision(
            State.PENDING,
            {**base, "next_poll_at": until, "last_http_status": outcome.http_status},
            pause="rate",
            retry_after=outcome.retry_after,
        )

    polled = {**base, "last_polled_at": now, "last_http_status": outcome.http_status}
    deadline = deadline_of(row, policy)

    if isinstance(outcome, Transient):
        changes = {
            **polled,
            "error_count": row.error_count + 1,
            "last_error": _short(outcome.reason),
        }
        event = EventSpec("error", _short(outcome.reason), outcome.http_status)
        if sent >= deadline + ERROR_GRACE:
            reason = (
                f"expired: no usable answer after the deadline (last: {_short(outcome.reason)})"
            )
            changes.update(abandon_reason=reason)
            return Decision(
                State.ABANDONED,
                _finished(State.ABANDONED, now, changes),
                (event, EventSpec("abandoned", reason, outcome.http_status)),
            )
        attempt = row.poll_count + row.error_count + 1
        changes["next_poll_at"] = next_poll(row, now, policy, rng, attempt, sent, grid=grid)
        if sent >= deadline:
            # keep retrying past the deadline only within the grace period
            changes["next_poll_at"] = min(changes["next_poll_at"], deadline + ERROR_GRACE)
        return Decision(State.PENDING, changes, (event,))

    polled.update(poll_count=row.poll_count + 1, last_error=None)

    if isinstance(outcome, Deleted | Rejected):
        label = "deleted" if isinstance(outcome, Deleted) else "rejected"
        reason = f"{label}: {_short(outcome.message) or 'no message'}"
        polled["abandon_reason"] = reason
        return Decision(
            State.ABANDONED,
            _finished(State.ABANDONED, now, polled),
            (EventSpec("abandoned", reason, outcome.http_status),),
        )

    events: list[EventSpec] = []
    anomaly: str | None = None
    status_code = row.status_code  # what the schedule goes by: the latest status we know
    entry: dict[str, Any] | None = None
    if isinstance(outcome, Listed):
        # Still in progress, says the list: its status columns follow (with an event when the
        # status changes), the record does not (the entry is not the record we keep).
        entry = clean_json(outcome.entry)
        code, name, final = status_of(entry)
        if code is not None and code != row.status_code:
            polled.update(status_code=code, status_name=name, status_final=final)
            events.append(EventSpec("status", None, outcome.http_status, code, name))
        status_code = code if code is not None else status_code
    elif isinstance(outcome, Record):
        record = clean_json(outcome.record)
        columns = typed_columns(record)
        digest = record_digest(record)
        if digest != row.record_sha:
            # Only a changed record is written: an identical answer costs one small UPDATE.
            polled.update(columns, record=record, record_sha=digest)
        if not row.has_record or columns["status_code"] != row.status_code:
            events.append(
                EventSpec(
                    "status",
                    None,
                    outcome.http_status,
                    columns["status_code"],
                    columns["status_name"],
                )
            )
        status_code = columns["status_code"]
        entry = record
        verdict, anomaly = judge(record)
        if verdict in (Verdict.SUCCESS, Verdict.FAILURE):
            events.append(
                EventSpec(
                    "done",
                    None,
                    outcome.http_status,
                    columns["status_code"],
                    columns["status_name"],
                )
            )
            return Decision(
                State.DONE, _finished(State.DONE, now, polled), tuple(events), notify_done=True
            )
        if anomaly is not None and events:
            # once per status change, not once per poll: the log has every occurrence
            events.append(
                EventSpec("anomaly", anomaly, outcome.http_status, columns["status_code"])
            )
    else:
        assert isinstance(outcome, NotYet)

    if sent >= deadline:
        reason = f"expired: not finished {policy.give_up_after:g}s after enqueue"
        polled["abandon_reason"] = reason
        events.append(EventSpec("abandoned", reason, outcome.http_status))
        return Decision(
            State.ABANDONED, _finished(State.ABANDONED, now, polled), tuple(events), anomaly=anomaly
        )
    if row.started_at is None and schedule.stage_of(status_code) is schedule.Stage.GENERATING:
        polled["started_at"] = started_since(row)
    polled["next_poll_at"] = next_poll(
        row,
        now,
        policy,
        rng,
        row.poll_count + 1,
        sent,
        progress=progress_of(row, now, status_code, entry),
        knowledge=knowledge,
        grid=grid,
        share=share,
    )
    return Decision(State.PENDING, polled, tuple(events), anomaly=anomaly)


def not_applied(
    row: RowView,
    reason: str,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    sent_at: datetime | None = None,
    http_status: int | None = None,
) -> Decision:
    """An answer that could not be applied (an error of ours, or a value nothing could store).

    Counted like an upstream error: ``error_count`` + 1, an ``error`` event, the next poll
    after the usual backoff (never at once: the same answer would likely fail the same way).
    A poll sent at or past the deadline expires the row, without the grace an upstream outage
    gets (``ERROR_GRACE``): the upstream did answer, and waiting longer would not change ours.
    """
    sent = sent_at or now
    message = _short(f"answer not applied: {reason}")
    changes: dict[str, Any] = {
        "updated_at": now,
        "claimed_until": None,
        "claim_token": None,
        "last_polled_at": now,
        "last_http_status": http_status,
        "error_count": row.error_count + 1,
        "last_error": message,
    }
    event = EventSpec("error", message, http_status)
    if sent >= deadline_of(row, policy):
        why = f"expired: no answer could be applied by the deadline (last: {message})"
        changes["abandon_reason"] = _short(why)
        return Decision(
            State.ABANDONED,
            _finished(State.ABANDONED, now, changes),
            (event, EventSpec("abandoned", changes["abandon_reason"], http_status)),
        )
    attempt = row.poll_count + row.error_count + 1
    changes["next_poll_at"] = next_poll(row, now, policy, rng, attempt, sent)
    return Decision(State.PENDING, changes, (event,))


# --- the global rate limiter (GCRA) ------------------------------------------------------------


@dataclass(frozen=True)
class LimiterView:
    next_slot_at: datetime | None = None
    rate_factor: float = 1.0
    rate_factor_at: datetime | None = None
    throttled_until: datetime | None = None
    auth_paused_until: datetime | None = None
    auth_failing: bool = False


@dataclass(frozen=True)
class SlotPlan:
    """Up to ``count`` request slots, ``spacing`` seconds apart from ``first`` (database time)."""

    count: int
    first: datetime
    spacing: float
    reason: str | None = None  # why nothing may be claimed now

    def slot(self, index: int) -> datetime:
        return self.first + timedelta(seconds=index * self.spacing)


def _blocked(limiter: LimiterView, now: datetime) -> str | None:
    if limiter.auth_paused_until is not None and now < limiter.auth_paused_until:
        return "paused: the upstream rejected the token"
    if limiter.throttled_until is not None and now < limiter.throttled_until:
        return "throttled: the upstream answered 429"
    return None


def plan_extra_slots(
    limiter: LimiterView,
    now: datetime,
    rate_limit: float,
    count: int,
    policy: Policy,
    lead: float = 0.0,
) -> SlotPlan:
    """``count`` more slots for requests a batch learned it needs (a next page, a record to
    fetch), on the same global schedule as dispatch's: from the next free slot, 1/rate apart.
    None while paused, throttled, or probing a rejected token (one request at a time)."""
    blocked = _blocked(limiter, now)
    if blocked is None and limiter.auth_failing:
        blocked = "probing: the upstream rejected the token"
    if blocked is not None:
        return SlotPlan(0, now, 0.0, blocked)
    spacing = 1.0 / (rate_limit * effective_rate_factor(limiter, now, policy))
    return SlotPlan(max(0, count), _first_slot(limiter, now, lead), spacing)


def _first_slot(limiter: LimiterView, now: datetime, lead: float) -> datetime:
    """The next free slot, and never sooner than ``lead`` seconds from now."""
    start = now + timedelta(seconds=lead)
    return start if limiter.next_slot_at is None else max(start, limiter.next_slot_at)


def effective_rate_factor(limiter: LimiterView, now: datetime, policy: Policy) -> float:
    """The rate multiplier after 429s climbs back by 1/``rate_recovery`` per second, up to 1.

    From the floor that takes at most ``rate_recovery`` seconds; from one halving, half that.
    """
    if limiter.rate_factor >= 1.0 or limiter.rate_factor_at is None:
        return 1.0
    elapsed = max(0.0, (now - limiter.rate_factor_at).total_seconds())
    return min(1.0, limiter.rate_factor + elapsed / policy.rate_recovery)


def plan_slots(
    limiter: LimiterView,
    now: datetime,
    rate_limit: float,
    horizon: float,
    policy: Policy,
    max_count: int = 10_000,
    lead: float = 0.0,
) -> SlotPlan:
    """How many ids one dispatch may claim, and when each may be fetched.

    Slots are handed out at 1/rate spacing from a shared "next free slot" time, so however many
    dispatchers run, the upstream never sees more than the rate, and never a burst. None comes
    sooner than ``lead`` seconds from now (the time it takes to hand a slot to a worker).
    """
    blocked = _blocked(limiter, now)
    if blocked is not None:
        return SlotPlan(0, now, 0.0, blocked)
    rate = rate_limit * effective_rate_factor(limiter, now, policy)
    spacing = 1.0 / rate
    first = _first_slot(limiter, now, lead)
    window = (now + timedelta(seconds=lead) - first).total_seconds() + horizon
    count = max(0, math.ceil(window / spacing - 1e-9))
    if limiter.auth_failing:
        count = min(count, 1)  # probe with one request until the token works again
    return SlotPlan(min(count, max_count), first, spacing)


def after_rate_limited(
    limiter: LimiterView, retry_after: float | None, now: datetime, policy: Policy
) -> dict[str, Any]:
    """Control-row changes after a 429: halve the rate (once per throttle) and pause."""
    wait = retry_after if retry_after is not None else policy.rate_limit_pause
    until = now + timedelta(seconds=wait)
    changes: dict[str, Any] = {}
    already = limiter.throttled_until is not None and now < limiter.throttled_until
    if not already:
        factor = effective_rate_factor(limiter, now, policy)
        changes.update(rate_factor=max(MIN_RATE_FACTOR, factor / 2), rate_factor_at=now)
    if limiter.throttled_until is None or until > limiter.throttled_until:
        changes["throttled_until"] = until
    return changes


def after_unauthorized(
    limiter: LimiterView, message: str, now: datetime, policy: Policy
) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "auth_failing": True,
        "auth_paused_until": now + timedelta(seconds=policy.auth_pause),
        "auth_error": _short(message) or "Unauthorized",
    }
    if not limiter.auth_failing:
        changes["auth_failed_at"] = now
    return changes


@dataclass
class PollCounts:
    """Per-batch tally of poll outcomes, written once per batch."""

    polls: int = 0
    errors: int = 0
    rate_limited: int = 0
    unauthorized: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome | ListOutcome | SchedulerOutcome) -> None:
        kind = kind_of(outcome)
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.polls += 1
        if isinstance(outcome, Transient):
            self.errors += 1
        elif isinstance(outcome, RateLimited):
            self.rate_limited += 1
        elif isinstance(outcome, Unauthorized):
            self.unauthorized += 1

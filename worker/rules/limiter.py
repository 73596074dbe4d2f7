"""The global rate limiter (GCRA): request slots 1/rate apart, paused by 401s, slowed by 429s.

Pure: the control row's values come in as a ``LimiterView``, the changes go out as values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.rules.verdict import short

MIN_RATE_FACTOR = 0.05


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


def place(dues: Sequence[datetime], plan: SlotPlan) -> list[datetime]:
    """The slot of each request, given its rows' due times in order: the plan's next slot, or
    the due time if that is later, and never closer than the plan's spacing to the one before."""
    slots: list[datetime] = []
    spacing = timedelta(seconds=plan.spacing)
    for due in dues:
        slots.append(max(plan.first, due) if not slots else max(slots[-1] + spacing, due))
    return slots


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
        "auth_error": short(message) or "Unauthorized",
    }
    if not limiter.auth_failing:
        changes["auth_failed_at"] = now
    return changes

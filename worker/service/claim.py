"""The claim: due ids locked under one fencing token, grouped into requests (a list read per
account and page, or a fetch by id), each on a slot of the global limiter, with its lease.

The rules decide how many slots there are (``rules.limiter.plan_slots``), which ids share a
request (``rules.listing.group_key``) and where each request's slot falls (``place``); the SQL
layer locks and claims the rows (``db.claim``) and stores the control row's new state.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from pixverse_tracker.db.claim import claim_rows, set_leases, steer_claim_plan
from pixverse_tracker.db.control import limiter_view, lock, update_control
from pixverse_tracker.rules.limiter import SlotPlan, place, plan_slots
from pixverse_tracker.rules.listing import group_key
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.service.limiter import SLOT_LEAD


@dataclass(frozen=True)
class Request:
    """One upstream request of a claim: a list read for an account's ids, or one id's fetch."""

    ids: tuple[str, ...]
    account: str | None  # the account whose list answers for ``ids``; None: fetch ids[0]
    slot: datetime
    offset: int = 0  # where the list read starts: the page that last showed ``ids``


@dataclass(frozen=True)
class Claim:
    """Ids claimed by one dispatch: the fencing token, and the requests with their slots."""

    token: str | None
    now: datetime
    requests: list[Request]
    reason: str | None = None
    spacing: float = 0.0  # seconds between two slots at the rate this claim was planned at

    @property
    def slots(self) -> list[tuple[str, datetime]]:
        """Every claimed id with the slot of the request that answers for it."""
        return [(video_id, r.slot) for r in self.requests for video_id in r.ids]


# Claim rounds when ids share list requests: each round claims more due rows for the slots left,
# until the slots are used or nothing more is due. The first round claims one row per slot; each
# later one as many rows per slot as the requests so far carried ids, so a burst of one
# account's ids (a hundred due at once) is claimed in a few rounds, not over many dispatches,
# while ids of as many accounts as slots still claim one row per slot.
CLAIM_ROUNDS = 6


def claim_due(
    session: Session,
    *,
    rate_limit: float,
    horizon: float,
    lease: float,
    policy: Policy,
    max_count: int = 10_000,
) -> Claim:
    """Claim pending rows due within ``horizon``, as many as the global rate allows over it.

    A slot is one request, fired no sooner than the row's due time: rows due later in the
    coming interval are claimed now and fetched at their time, so dispatch ticks add no delay.
    Each claimed id's lease ends ``lease`` seconds after its own request's slot (the request
    plus a dispatch interval, ``Settings.lease``), and the id is due again then: a worker that
    dies holding it costs that much, not a flat lease for the whole batch.
    With the list endpoint on (``policy.list_interval``) the ids of one account share one
    list request, and the slots left over claim more rows. The control row's lock serializes
    dispatchers (two beats are safe); ``SKIP LOCKED`` keeps a dispatcher from waiting on rows
    a worker is writing.
    """
    steer_claim_plan(session)
    control, now = lock(session)
    plan: SlotPlan = plan_slots(
        limiter_view(control), now, rate_limit, horizon, policy, max_count, SLOT_LEAD
    )
    update_control(control, last_dispatch_at=now)
    if plan.count == 0:
        return Claim(None, now, [], plan.reason)
    token = uuid.uuid4().hex
    grouping = policy.list_interval is not None
    # One list request per (account, page): the ids of a big account are spread over pages,
    # each read where it last showed them, side by side rather than in a chain from the top.
    groups: dict[tuple[str, int], list[tuple[str, datetime]]] = {}
    singles: list[tuple[str, datetime]] = []
    total = 0
    for _ in range(CLAIM_ROUNDS if grouping else 1):
        taken = len(groups) + len(singles)  # requests so far
        per_slot = math.ceil(total / taken) if taken else 1
        wanted = min((plan.count - taken) * per_slot, max_count - total)
        if wanted <= 0:
            break
        rows = claim_rows(session, now + timedelta(seconds=horizon), wanted, token)
        total += len(rows)
        for video_id, due, missed, offset in rows:
            key = group_key(video_id, missed, now, policy.list_retry) if grouping else None
            if key is None:
                singles.append((video_id, due))
            else:
                groups.setdefault((key, offset or 0), []).append((video_id, due))
        if len(rows) < wanted:
            break  # nothing more is due
    unplaced: list[tuple[tuple[str, ...], str | None, datetime, int]] = [
        (tuple(v for v, _ in m), a, min(d for _, d in m), o) for (a, o), m in groups.items()
    ]
    unplaced += [((v,), None, due, 0) for v, due in singles]
    if not unplaced:
        return Claim(token, now, [], spacing=plan.spacing)
    ordered = sorted(unplaced, key=lambda r: (r[2], r[3], r[0]))
    slots = place([due for _, _, due, _ in ordered], plan)
    requests = [
        Request(ids_, account, slot, offset)
        for (ids_, account, _, offset), slot in zip(ordered, slots, strict=True)
    ]
    set_leases(session, token, [(r.ids, r.slot + timedelta(seconds=lease)) for r in requests])
    # The capacity taken is counted from the first free slot, not from the latest request: a
    # request due late in the interval is fired at its time, and a request learned meanwhile
    # (a next page, a record to fetch) must not wait behind it. Two requests may then meet,
    # one booked late and one handed out since; never more, and never more per interval.
    update_control(control, next_slot_at=plan.slot(len(requests)))
    if control.auth_failing:
        # One probe in flight at a time: no further probe until this one answers (which
        # clears or renews the pause) or its lease runs out.
        update_control(control, auth_paused_until=requests[-1].slot + timedelta(seconds=lease))
    return Claim(token, now, requests, spacing=plan.spacing)

"""All the tracker's SQL: enqueue, claim, apply a poll result, release, and the read queries.

Functions take a Session and never commit: the caller (a task or the CLI) owns the transaction.
Times come from the database's clock (``db_now``), never from the worker's.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import FunctionElement

from pixverse_tracker.models import (
    CONTROL_ROW_ID,
    CallbackDelivery,
    PollMinute,
    TrackerControl,
    UTCDateTime,
    Video,
    VideoEvent,
)
from pixverse_tracker.rules import listing, schedule, webhooks
from pixverse_tracker.rules.limiter import (
    LimiterView,
    SlotPlan,
    after_rate_limited,
    after_unauthorized,
    effective_rate_factor,
    plan_extra_slots,
    plan_slots,
)
from pixverse_tracker.rules.outcomes import PollCounts
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.rules.row import Decision, EventSpec, RowView
from pixverse_tracker.rules.state import State
from pixverse_tracker.rules.timing import first_poll_at

NOTIFY_CHANNEL = "video_done"
CHUNK = 5000  # rows per multi-row statement: well under every driver's parameter limit


class db_now(FunctionElement[datetime]):
    """The database's current time, so every worker agrees on one clock."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(db_now, "postgresql")
def _now_pg(element: Any, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now() or statement_timestamp(): both of those date from before a
    # wait for a row lock, and a dispatcher that waited must date its claim from after it.
    return "clock_timestamp()"


@compiles(db_now, "sqlite")
def _now_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def current_time(session: Session) -> datetime:
    return session.execute(select(db_now())).scalar_one()


def _table(model: type[Any]) -> Table:
    """The Core table behind a model, for bulk statements that bypass the ORM unit of work."""
    return cast(Table, model.__table__)


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_for(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --- enqueue -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnqueueResult:
    added: list[str] = field(default_factory=list)
    rearmed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def enqueue(
    session: Session,
    video_ids: Sequence[str],
    policy: Policy,
    *,
    retrack: bool = False,
    callback_url: str | None = None,
) -> EnqueueResult:
    """Insert valid, de-duplicated ids; existing rows are left alone unless ``retrack``.

    A batch is one statement (Postgres: the ids travel as one array), not a round trip per id.
    """
    now = current_time(session)
    known = knowledge(session) if policy.schedule == "adaptive" else None
    first = first_poll_at(now, policy, known)
    firsts = _first_polls(video_ids, now, policy, known) if policy.list_interval else None
    insert_new = _insert_new_pg if is_postgres(session) else _insert_new_portable
    added: list[str] = []
    rearmed: list[str] = []
    for chunk in _chunks(video_ids, 50_000 if is_postgres(session) else CHUNK):
        new = insert_new(session, chunk, now, first, callback_url, firsts)
        added.extend(new)
        if retrack and len(new) < len(chunk):
            fresh = set(new)
            existing = [v for v in chunk if v not in fresh]
            rearmed.extend(_rearm(session, existing, now, first, callback_url))
    _add_events(session, now, [(v, EventSpec("retracked")) for v in rearmed])
    touched = set(added) | set(rearmed)
    return EnqueueResult(added, rearmed, [v for v in video_ids if v not in touched])


def _first_polls(
    video_ids: Sequence[str], now: datetime, policy: Policy, known: schedule.Knowledge | None
) -> dict[str, datetime]:
    """First polls of ids read through the list: on their account's grid (one per account)."""
    by_account: dict[str, datetime] = {}
    firsts: dict[str, datetime] = {}
    for video_id in video_ids:
        account = listing.group_key(video_id, None, now, policy.list_retry)
        if account is None:
            continue
        if account not in by_account:
            grid = listing.grid_for(video_id, None, now, policy)
            by_account[account] = first_poll_at(now, policy, known, grid)
        firsts[video_id] = by_account[account]
    return firsts


_INSERT_NEW_PG = text(
    """
    WITH added AS (
        INSERT INTO videos (video_id, state, enqueued_at, updated_at, next_poll_at,
                            poll_count, error_count, callback_url)
        SELECT v, 'pending', :now, :now, coalesce(to_timestamp(f), :first), 0, 0, :callback_url
        FROM unnest(:ids, :firsts) AS t(v, f)
        ON CONFLICT (video_id) DO NOTHING
        RETURNING video_id
    ), logged AS (
        INSERT INTO video_events (video_id, at, kind)
        SELECT video_id, :now, 'enqueued' FROM added
    )
    SELECT video_id FROM added
    """
).bindparams(
    bindparam("ids", type_=postgresql.ARRAY(Text)),
    # epoch seconds: a million datetimes take psycopg2 many times longer to adapt than floats
    bindparam("firsts", type_=postgresql.ARRAY(postgresql.DOUBLE_PRECISION)),
)


def _insert_new_pg(
    session: Session,
    video_ids: Sequence[str],
    now: datetime,
    first: datetime,
    callback_url: str | None,
    firsts: dict[str, datetime] | None = None,
) -> list[str]:
    params = {
        "ids": list(video_ids),
        # NULL where an id has no grid of its own: it takes :first
        "firsts": [_epoch(firsts.get(v)) for v in video_ids] if firsts else [None] * len(video_ids),
        "now": now,
        "first": first,
        "callback_url": callback_url,
    }
    return list(session.execute(_INSERT_NEW_PG, params).scalars())


def _epoch(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


def _insert_new_portable(
    session: Session,
    video_ids: Sequence[str],
    now: datetime,
    first: datetime,
    callback_url: str | None,
    firsts: dict[str, datetime] | None = None,
) -> list[str]:
    rows = [
        {
            "video_id": video_id,
            "state": State.PENDING.value,
            "enqueued_at": now,
            "updated_at": now,
            "next_poll_at": (firsts or {}).get(video_id, first),
            "poll_count": 0,
            "error_count": 0,
            "callback_url": callback_url,
        }
        for video_id in video_ids
    ]
    stmt = (
        sqlite.insert(_table(Video))
        .on_conflict_do_nothing(index_elements=["video_id"])
        .returning(_table(Video).c.video_id)
    )
    new = list(session.execute(stmt, rows).scalars())
    _add_events(session, now, [(v, EventSpec("enqueued")) for v in new])
    return new


def _rearm(
    session: Session,
    video_ids: Sequence[str],
    now: datetime,
    first: datetime,
    callback_url: str | None,
) -> list[str]:
    # a re-armed id keeps its callback URL unless a new one is given
    new_url = {"callback_url": callback_url} if callback_url is not None else {}
    stmt = (
        update(Video)
        .where(Video.video_id.in_(video_ids), Video.state != State.PENDING.value)
        .values(
            **new_url,
            state=State.PENDING.value,
            enqueued_at=now,
            updated_at=now,
            next_poll_at=first,
            done_at=None,
            abandon_reason=None,
            poll_count=0,
            error_count=0,
            claimed_until=None,
            claim_token=None,
        )
        .returning(Video.video_id)
        .execution_options(synchronize_session=False)
    )
    return list(session.execute(stmt).scalars())


def _add_events(session: Session, now: datetime, events: Iterable[tuple[str, EventSpec]]) -> None:
    rows = [
        {
            "video_id": video_id,
            "at": now,
            "kind": spec.kind,
            "http_status": spec.http_status,
            "status_code": spec.status_code,
            "status_name": spec.status_name,
            "message": spec.message,
        }
        for video_id, spec in events
    ]
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(_table(VideoEvent)), rows[start : start + CHUNK])


# --- the global limiter and the claim -------------------------------------------------------------


def _limiter_view(control: TrackerControl) -> LimiterView:
    return LimiterView(
        next_slot_at=control.next_slot_at,
        rate_factor=control.rate_factor,
        rate_factor_at=control.rate_factor_at,
        throttled_until=control.throttled_until,
        auth_paused_until=control.auth_paused_until,
        auth_failing=control.auth_failing,
    )


# From booking a slot to a worker ready to send on it: the booking's commit (with the leases of
# its ids), the broker's hop and the batch's own read. A slot sooner than that would be missed
# by construction, and a missed slot is booked again (poller.late_tolerance).
SLOT_LEAD = 0.2


def _lock_control(session: Session) -> tuple[TrackerControl, datetime]:
    control = session.execute(
        select(TrackerControl).where(TrackerControl.id == CONTROL_ROW_ID).with_for_update()
    ).scalar_one_or_none()
    if control is None:  # a database migrated by hand without the seed row
        session.add(TrackerControl(id=CONTROL_ROW_ID, rate_factor=1.0, auth_failing=False))
        session.flush()
        return _lock_control(session)
    # read the clock only now that the lock is ours: waiting for it must not age the claim
    return control, current_time(session)


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
    control, now = _lock_control(session)
    plan: SlotPlan = plan_slots(
        _limiter_view(control), now, rate_limit, horizon, policy, max_count, SLOT_LEAD
    )
    control.last_dispatch_at = now
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
        rows = _claim_rows(session, now + timedelta(seconds=horizon), wanted, token)
        total += len(rows)
        for video_id, due, missed, offset in rows:
            key = listing.group_key(video_id, missed, now, policy.list_retry) if grouping else None
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
    requests = _place(sorted(unplaced, key=lambda r: (r[2], r[3], r[0])), plan)
    set_leases(session, token, [(r.ids, r.slot + timedelta(seconds=lease)) for r in requests])
    # The capacity taken is counted from the first free slot, not from the latest request: a
    # request due late in the interval is fired at its time, and a request learned meanwhile
    # (a next page, a record to fetch) must not wait behind it. Two requests may then meet,
    # one booked late and one handed out since; never more, and never more per interval.
    control.next_slot_at = plan.slot(len(requests))
    if control.auth_failing:
        # One probe in flight at a time: no further probe until this one answers (which
        # clears or renews the pause) or its lease runs out.
        control.auth_paused_until = requests[-1].slot + timedelta(seconds=lease)
    return Claim(token, now, requests, spacing=plan.spacing)


# The claim is index lookups by nature: the due index in order, stopping after the rows it
# takes, then primary keys. Right after a bulk enqueue the table has no statistics yet, and
# Postgres would read every due row instead (the whole table, or a bitmap of the due index
# and a sort): a second at a million rows, with the control row locked (docs/performance.md,
# benchmark 3). Only for the claim's transaction (SET LOCAL).
CLAIM_PLAN_SETTINGS = ("enable_seqscan", "enable_bitmapscan", "enable_sort")
_CLAIM_PLAN = "; ".join(f"SET LOCAL {name} = off" for name in CLAIM_PLAN_SETTINGS)


def steer_claim_plan(session: Session) -> None:
    """Keep the claim's statements on their index paths, whatever the statistics say."""
    if is_postgres(session):
        session.execute(text(_CLAIM_PLAN))


def _claim_rows(
    session: Session, horizon_end: datetime, limit: int, token: str
) -> list[tuple[str, datetime, datetime | None, int | None]]:
    """Lock and claim up to ``limit`` rows due by ``horizon_end``, soonest first (their leases
    are set once their requests have slots: ``set_leases``)."""
    rows = session.execute(
        select(Video.video_id, Video.next_poll_at, Video.list_missed_at, Video.list_offset)
        .where(
            Video.state == State.PENDING.value,
            Video.next_poll_at <= horizon_end,
            # rows claimed by an earlier round of this claim are ours already
            or_(Video.claim_token.is_(None), Video.claim_token != token),
        )
        .order_by(Video.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        session.execute(
            update(Video)
            .where(_id_in(session, [r[0] for r in rows]))
            .values(claim_token=token)
            .execution_options(synchronize_session=False)
        )
    # pending rows always have a due time (the WHERE above compared it)
    return [(r[0], cast(datetime, r[1]), r[2], r[3]) for r in rows]


_SET_LEASES_PG = text(
    """
    UPDATE videos AS v SET claimed_until = l.until, next_poll_at = l.until
    FROM unnest(CAST(:ids AS text[]), CAST(:untils AS timestamptz[])) AS l(video_id, until)
    WHERE v.video_id = l.video_id AND v.claim_token = :token AND v.state = 'pending'
    """
)
_SET_LEASE_PORTABLE = text(
    "UPDATE videos SET claimed_until = :until, next_poll_at = :until "
    "WHERE video_id = :video_id AND claim_token = :token AND state = 'pending'"
).bindparams(bindparam("until", type_=UTCDateTime()))


def set_leases(
    session: Session, token: str, leases: Sequence[tuple[Sequence[str], datetime]]
) -> None:
    """Give each group of ids held by ``token`` its lease end, which is also when it is due
    again should nobody answer for it (one statement on Postgres)."""
    pairs = [(video_id, until) for ids_, until in leases for video_id in ids_]
    if not pairs:
        return
    if is_postgres(session):
        session.execute(
            _SET_LEASES_PG,
            {"ids": [v for v, _ in pairs], "untils": [u for _, u in pairs], "token": token},
        )
    else:
        session.execute(
            _SET_LEASE_PORTABLE,
            [{"video_id": v, "until": u, "token": token} for v, u in pairs],
        )


def _id_in(session: Session, video_ids: Sequence[str]) -> Any:
    if is_postgres(session):
        # one array parameter, and a plan of primary-key lookups whatever the count
        return Video.video_id == any_(
            bindparam("ids", list(video_ids), type_=postgresql.ARRAY(Text))
        )
    return Video.video_id.in_(list(video_ids))


def _place(
    unplaced: Sequence[tuple[tuple[str, ...], str | None, datetime, int]], plan: SlotPlan
) -> list[Request]:
    """Give each request its slot: the plan's next one, or its rows' due time if that is later,
    and never closer than the plan's spacing to the one before."""
    requests: list[Request] = []
    spacing = timedelta(seconds=plan.spacing)
    previous: datetime | None = None
    for ids_, account, due, offset in unplaced:
        slot = max(plan.first, due) if previous is None else max(previous + spacing, due)
        requests.append(Request(ids_, account, slot, offset))
        previous = slot
    return requests


_VIEW_COLUMNS = (
    Video.video_id,
    Video.enqueued_at,
    Video.poll_count,
    Video.error_count,
    Video.status_code,
    Video.record.is_not(None),
    Video.callback_url,
    Video.record_sha,
    Video.started_at,
    Video.list_missed_at,
    Video.last_polled_at,
    Video.claimed_until,
    Video.list_offset,
)


def _row_view(r: Sequence[Any]) -> RowView:
    return RowView(
        r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8], r[9], r[10], r[11], r[12]
    )


def owned_rows(
    session: Session, token: str, video_ids: Sequence[str], margin: float
) -> tuple[datetime, dict[str, RowView], bool]:
    """Rows this claim still holds with at least ``margin`` seconds of lease left.

    A stale or duplicate task finds nothing here and so never polls an id someone else holds.
    Also says whether the upstream is currently rejecting the token.
    """
    now = current_time(session)
    # No "state = 'pending'" in SQL: it would let the planner pick the partial due index and
    # scan every pending row while statistics lag behind a bulk enqueue; by primary key it
    # reads the batch's rows only, and the state is checked here.
    rows = [
        row[:-1]
        for row in session.execute(
            select(*_VIEW_COLUMNS, Video.state).where(
                Video.video_id.in_(video_ids),
                Video.claim_token == token,
                Video.claimed_until > now + timedelta(seconds=margin),
            )
        ).all()
        if row[-1] == State.PENDING.value
    ]
    failing = session.execute(
        select(TrackerControl.auth_failing).where(TrackerControl.id == CONTROL_ROW_ID)
    ).scalar_one_or_none()
    views = {str(r[0]): _row_view(r) for r in rows}
    return now, views, bool(failing)


def adopt(
    session: Session, token: str, video_ids: Sequence[str], lease: float
) -> dict[str, RowView]:
    """Claim, under ``token``, those of ``video_ids`` that are pending and free.

    For ids a list page showed finished that this batch had not claimed: they are answered
    now instead of at their own next poll. Rows another claim holds are left alone, and
    ``SKIP LOCKED`` keeps two adopters from waiting on (or deadlocking over) the same rows.
    """
    if not video_ids:
        return {}
    now = current_time(session)
    free = list(
        session.execute(
            select(Video.video_id)
            .where(
                _id_in(session, video_ids),
                Video.state == State.PENDING.value,
                or_(Video.claim_token.is_(None), Video.claimed_until <= now),
            )
            .order_by(Video.video_id)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not free:
        return {}
    until = now + timedelta(seconds=lease)
    rows = session.execute(
        update(Video)
        .where(_id_in(session, free))
        .values(claimed_until=until, next_poll_at=until, claim_token=token)
        .returning(*_VIEW_COLUMNS)
        .execution_options(synchronize_session=False)
    ).all()
    return {str(r[0]): _row_view(r) for r in rows}


def reserve_slots(
    session: Session, count: int, rate_limit: float, policy: Policy
) -> tuple[datetime, list[datetime]]:
    """``count`` more request slots from the global limiter (database time), or none while
    polling is paused or throttled. Returns (now, slots)."""
    control, now = _lock_control(session)
    plan = plan_extra_slots(_limiter_view(control), now, rate_limit, count, policy, SLOT_LEAD)
    if plan.count == 0:
        return now, []
    control.next_slot_at = plan.slot(plan.count)
    return now, [plan.slot(i) for i in range(plan.count)]


def knowledge(
    session: Session,
    limit: int = schedule.SAMPLE_ROWS,
    prior: schedule.Durations = schedule.PRIOR_COMPLETION,
) -> schedule.Knowledge:
    """How long the newest finished videos took, for the adaptive schedule.

    Read backwards along the (done_at, video_id) index: a bounded read whatever the table's
    size. Failures count too: a FAILED answer is as final as a COMPLETED one.
    """
    rows = session.execute(
        select(Video.done_at, Video.enqueued_at, Video.started_at)
        .where(Video.done_at.is_not(None), Video.state == State.DONE.value)
        .order_by(Video.done_at.desc())
        .limit(limit)
    ).all()
    finished = [(done, enqueued, started) for done, enqueued, started in rows if done is not None]
    return schedule.Knowledge(
        completion=schedule.Durations.of((d - e).total_seconds() for d, e, _ in finished),
        generation=schedule.Durations.of(
            (d - s).total_seconds() for d, _, s in finished if s is not None
        ),
        prior=prior,
    )


# --- applying an answer ---------------------------------------------------------------------------


def apply(
    session: Session,
    video_id: str,
    token: str,
    decision: Decision,
    callback_url: str | None = None,
    sent_at: datetime | None = None,
) -> bool:
    """Write one decision, guarded by the claim token and ``state = 'pending'``.

    Returns False (and writes nothing) when the claim no longer holds: a late or duplicate
    answer can never move a finished row, nor overwrite a newer claimant's record. When the
    row finishes and ``callback_url`` is given, the callback is queued in the same transaction.
    """
    now = decision.changes["updated_at"]
    finishing = decision.state is not State.PENDING and callback_url is not None
    changes = dict(decision.changes)
    if sent_at is not None and decision.pause is None and "next_poll_at" in changes:
        # A push that arrived while this request was out: the answer may predate it.
        changes["next_poll_at"] = case(
            (Video.hinted_at >= sent_at, now), else_=changes["next_poll_at"]
        )
    stmt = (
        update(Video)
        .where(
            Video.video_id == video_id,
            Video.claim_token == token,
            Video.state == State.PENDING.value,
        )
        .values(state=decision.state.value, **changes)
        .execution_options(synchronize_session=False)
    )
    if finishing:
        # the finished row, as committed, is the callback's body
        row = session.execute(stmt.returning(*_table(Video).c)).mappings().one_or_none()
        if row is None:
            return False
        assert callback_url is not None
        _queue_callback(session, callback_url, decision.state.value, row, now)
    elif session.execute(stmt).rowcount != 1:  # type: ignore[attr-defined]
        return False
    _add_events(session, now, [(video_id, e) for e in decision.events])
    if decision.notify_done and is_postgres(session):
        # NOTIFY is transactional: listeners hear it only if this row really became done.
        session.execute(select(func.pg_notify(NOTIFY_CHANNEL, video_id)))
    return True


def _queue_callback(session: Session, url: str, kind: str, row: Any, now: datetime) -> None:
    key = webhooks.idempotency_key(row["video_id"], kind, row["enqueued_at"])
    session.execute(
        insert(_table(CallbackDelivery)).values(
            video_id=row["video_id"],
            url=url,
            kind=kind,
            body=webhooks.body_for(kind, key, row),
            idempotency_key=key,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
    )


@dataclass(frozen=True)
class Delivery:
    id: int
    video_id: str
    url: str
    kind: str
    body: str
    idempotency_key: str
    attempts: int


def claim_deliveries(session: Session, *, limit: int, lease: float) -> tuple[str, list[Delivery]]:
    """Claim owed callbacks (FOR UPDATE SKIP LOCKED); a crashed sender's come back after lease."""
    now = current_time(session)
    token = uuid.uuid4().hex
    outbox = _table(CallbackDelivery)
    due = (
        select(outbox.c.id)
        .where(
            outbox.c.delivered_at.is_(None),
            outbox.c.failed_at.is_(None),
            outbox.c.next_attempt_at <= now,
        )
        .order_by(outbox.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(outbox)
        .where(outbox.c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=now + timedelta(seconds=lease), claim_token=token)
        .returning(
            outbox.c.id,
            outbox.c.video_id,
            outbox.c.url,
            outbox.c.kind,
            outbox.c.body,
            outbox.c.idempotency_key,
            outbox.c.attempts,
        )
    ).all()
    return token, [Delivery(*row) for row in sorted(rows)]


def delivery_result(
    session: Session,
    delivery_id: int,
    token: str,
    ok: bool,
    status: int | None,
    error: str | None,
    retry_in: timedelta | None,
) -> None:
    """Record one attempt: delivered, due again after ``retry_in``, or failed for good (None)."""
    now = current_time(session)
    outbox = _table(CallbackDelivery)
    values: dict[str, Any] = {
        "attempts": outbox.c.attempts + 1,
        "last_status": status,
        "last_error": error,
        "claim_token": None,
    }
    if ok:
        values.update(delivered_at=now, next_attempt_at=None)
    elif retry_in is None:
        values.update(failed_at=now, next_attempt_at=None)
    else:
        values.update(next_attempt_at=now + retry_in)
    session.execute(
        update(outbox)
        .where(outbox.c.id == delivery_id, outbox.c.claim_token == token)
        .values(**values)
    )


# --- the scheduler read ---------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerStart:
    """Whether a scheduler read may go out now, and at which slot of the global limiter."""

    now: datetime
    slot: datetime | None  # None: no read this time, for ``reason``
    reason: str | None = None


# After this many failed reads in a row the reads are this far apart at most: the endpoint
# is worth trying again now and then, but not every few seconds while it is broken.
SCHEDULER_MAX_BACKOFF = 300.0


def begin_scheduler_read(
    session: Session, *, rate_limit: float, interval: float, policy: Policy
) -> SchedulerStart:
    """Book the next scheduler read, if one is due: at most one per ``interval`` across every
    beat and worker (the control row's lock), only while some id is pending, later after
    failures, and on a slot of the same global limiter as every other request."""
    control, now = _lock_control(session)
    last = control.scheduler_read_at
    wait = interval * 2.0 ** min(control.scheduler_failures, 16)
    if last is not None and now < last + timedelta(seconds=min(wait, SCHEDULER_MAX_BACKOFF)) - (
        timedelta(seconds=0.25 * interval)  # a beat tick that comes a little early still reads
    ):
        return SchedulerStart(now, None, "not due" if not control.scheduler_failures else "backoff")
    pending = session.execute(
        select(Video.video_id)
        .where(Video.state == State.PENDING.value, Video.next_poll_at.is_not(None))
        .order_by(Video.next_poll_at)
        .limit(1)
    ).first()
    if pending is None:
        return SchedulerStart(now, None, "nothing pending")
    plan = plan_extra_slots(_limiter_view(control), now, rate_limit, 1, policy, SLOT_LEAD)
    if plan.count == 0:
        return SchedulerStart(now, None, plan.reason)
    control.next_slot_at = plan.slot(1)
    control.scheduler_read_at = now
    return SchedulerStart(now, plan.first)


@dataclass(frozen=True)
class SchedulerResult:
    """What one scheduler answer changed: tracked ids it listed, and ids that have left it."""

    now: datetime
    listed: int
    gone: list[str]


def scheduler_answered(
    session: Session,
    video_ids: Sequence[str],
    *,
    complete: bool,
    defer: float,
    refresh: float | None = None,
) -> SchedulerResult:
    """Apply one scheduler answer to the pending rows.

    - A pending id it lists is still executing: the read was a look at it, so its next look
      is moved to ``defer`` (the poll cap) after this read. Rows are rewritten only when first
      listed or when that look is less than ``refresh`` away (default half of ``defer``), not
      on every read: the caller picks ``refresh`` so that a dispatch never claims a listed id
      between two reads (its horizon plus two read intervals).
    - A pending id an earlier read listed and this one does not has just finished or failed:
      due at once (``hinted_at`` too, so that a poll of it already in flight, which may have
      been sent before it finished, is followed by another at once).
    - ``complete`` is False when the answer had items without a usable id: one of those may be
      ours, so nothing is taken as gone from that answer.
    """
    # The control row first, as every other writer takes it before rows (no deadlock).
    control, now = _lock_control(session)
    listed = sorted(set(video_ids))
    soon = now + timedelta(seconds=min(defer, refresh if refresh is not None else defer / 2))
    later = now + timedelta(seconds=defer)
    free = or_(Video.claim_token.is_(None), Video.claimed_until <= now)
    tracked = 0
    for chunk in _chunks(listed):
        tracked += int(
            session.execute(
                select(func.count())
                .select_from(Video)
                .where(_id_in(session, chunk), Video.state == State.PENDING.value)
            ).scalar_one()
        )
        session.execute(
            update(Video)
            .where(
                _id_in(session, chunk),
                Video.state == State.PENDING.value,
                or_(Video.scheduler_seen_at.is_(None), and_(free, Video.next_poll_at < soon)),
            )
            .values(
                scheduler_seen_at=func.coalesce(Video.scheduler_seen_at, now),
                next_poll_at=case(
                    (and_(free, Video.next_poll_at < later), later),
                    else_=Video.next_poll_at,
                ),
            )
            .execution_options(synchronize_session=False)
        )
    gone: list[str] = []
    if complete:
        seen = session.execute(
            select(Video.video_id).where(
                Video.state == State.PENDING.value, Video.scheduler_seen_at.is_not(None)
            )
        ).scalars()
        present = set(listed)
        gone = sorted(v for v in seen if v not in present)
    for chunk in _chunks(gone):
        session.execute(
            update(Video)
            .where(_id_in(session, chunk), Video.state == State.PENDING.value)
            .values(
                scheduler_seen_at=None,
                hinted_at=now,
                next_poll_at=case((free, now), else_=Video.next_poll_at),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    left = EventSpec("unscheduled", "left the upstream's scheduler: finished or failed")
    _add_events(session, now, [(v, left) for v in gone])
    control.scheduler_ok_at = now
    control.scheduler_failures = 0
    control.scheduler_error = None
    control.scheduler_executing = tracked
    return SchedulerResult(now, tracked, gone)


def scheduler_failed(session: Session, reason: str) -> int:
    """Note a failed scheduler read (reads back off); returns the failures in a row."""
    control, _ = _lock_control(session)
    control.scheduler_failures += 1
    control.scheduler_error = reason[:500]
    return control.scheduler_failures


def mark_due(session: Session, video_id: str) -> bool:
    """Make a pending, unclaimed row due now (a hint that it may have finished).

    A row being polled right now keeps its claim, but the hint is remembered (``hinted_at``):
    if that poll's answer says "not yet", it was sent before the push and ``apply`` polls
    again at once. Returns whether the row was made due; a 'hinted' event is written only
    then, so repeated hints cost nothing.
    """
    now = current_time(session)
    session.execute(
        update(Video)
        .where(Video.video_id == video_id, Video.state == State.PENDING.value)
        .values(hinted_at=now)
        .execution_options(synchronize_session=False)
    )
    moved = session.execute(
        update(Video)
        .where(
            Video.video_id == video_id,
            Video.state == State.PENDING.value,
            Video.next_poll_at > now,
            or_(Video.claim_token.is_(None), Video.claimed_until <= now),
        )
        .values(next_poll_at=now, claimed_until=None, claim_token=None, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if moved:
        _add_events(session, now, [(video_id, EventSpec("hinted", "upstream callback"))])
    return bool(moved)


def note_list_missed(session: Session, token: str, video_ids: Sequence[str]) -> None:
    """Remember that the list did not show these claimed ids: they are fetched by id next."""
    session.execute(
        update(Video)
        .where(_id_in(session, video_ids), Video.claim_token == token)
        .values(list_missed_at=db_now())
        .execution_options(synchronize_session=False)
    )


def note_list_offsets(session: Session, video_ids: Sequence[str], offset: int) -> int:
    """Remember that a list page at ``offset`` showed these ids (in progress, not asked about);
    returns how many of them are ours and pending.

    Their next list read then starts at that page: a burst read once from the top is read
    page by page afterwards. Best effort: rows another transaction is writing are skipped
    (``SKIP LOCKED``), never waited on; they learn their page at their own next read.
    """
    if not video_ids:
        return 0
    ours = session.execute(
        select(Video.video_id, Video.list_offset).where(
            _id_in(session, video_ids), Video.state == State.PENDING.value
        )
    ).all()
    moved = sorted(v for v, known in ours if known != offset)
    if moved:
        locked = (
            select(Video.video_id)
            .where(_id_in(session, moved), Video.state == State.PENDING.value)
            .order_by(Video.video_id)
            .with_for_update(skip_locked=True)
        )
        session.execute(
            update(Video)
            .where(Video.video_id.in_(locked.scalar_subquery()))
            .values(list_offset=offset)
            .execution_options(synchronize_session=False)
        )
    return len(ours)


def release(session: Session, token: str, video_ids: Sequence[str], until: datetime | None) -> int:
    """Give claimed rows back without penalty, due again at ``until`` (or now)."""
    if not video_ids:
        return 0
    result = session.execute(
        update(Video)
        .where(
            Video.video_id.in_(video_ids),
            Video.claim_token == token,
            Video.state == State.PENDING.value,
        )
        .values(
            next_poll_at=until if until is not None else db_now(),
            claimed_until=None,
            claim_token=None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def note_unauthorized(session: Session, message: str, policy: Policy) -> datetime:
    control, now = _lock_control(session)
    changes = after_unauthorized(_limiter_view(control), message, now, policy)
    for key, value in changes.items():
        setattr(control, key, value)
    return control.auth_paused_until or now


def note_rate_limited(session: Session, retry_after: float | None, policy: Policy) -> datetime:
    control, now = _lock_control(session)
    changes = after_rate_limited(_limiter_view(control), retry_after, now, policy)
    for key, value in changes.items():
        setattr(control, key, value)
    return control.throttled_until or now


def note_auth_ok(session: Session) -> None:
    session.execute(
        update(TrackerControl)
        .where(TrackerControl.id == CONTROL_ROW_ID, TrackerControl.auth_failing.is_(True))
        .values(auth_failing=False, auth_paused_until=None, auth_error=None)
    )


def add_poll_counts(session: Session, counts: PollCounts) -> None:
    """One upsert per batch into the current minute's counters."""
    if counts.polls == 0:
        return
    minute = current_time(session).replace(second=0, microsecond=0)
    values = {
        "minute": minute,
        "polls": counts.polls,
        "errors": counts.errors,
        "rate_limited": counts.rate_limited,
        "unauthorized": counts.unauthorized,
    }
    stmt = _insert_for(session)(_table(PollMinute)).values(values)
    table = _table(PollMinute)
    stmt = stmt.on_conflict_do_update(
        index_elements=["minute"],
        set_={
            name: table.c[name] + stmt.excluded[name]
            for name in ("polls", "errors", "rate_limited", "unauthorized")
        },
    )
    session.execute(stmt)


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    now: datetime
    counts: dict[str, int]
    due_now: int
    oldest_pending_id: str | None
    oldest_pending_since: datetime | None
    polls_last_hour: int
    errors_last_hour: int
    rate_limited_last_hour: int
    unauthorized_last_hour: int
    auth_failing: bool
    auth_error: str | None
    auth_failed_at: datetime | None
    auth_paused_until: datetime | None
    throttled_until: datetime | None
    rate_factor: float
    last_dispatch_at: datetime | None
    polls_last_5_minutes: int = 0
    errors_last_5_minutes: int = 0
    # Pending ids whose look is later than the latency contract allows (the cap past their
    # due time): the rate budget or the workers are short, or a 401/429 pause holds them.
    overdue: int = 0
    scheduler_read_at: datetime | None = None
    scheduler_ok_at: datetime | None = None
    scheduler_failures: int = 0
    scheduler_error: str | None = None
    scheduler_executing: int | None = None


def summary(session: Session, policy: Policy) -> Summary:
    now = current_time(session)
    counts = {s.value: 0 for s in State}
    for state, count in session.execute(select(Video.state, func.count()).group_by(Video.state)):
        counts[state] = count
    due_now = session.execute(
        select(func.count())
        .select_from(Video)
        .where(Video.state == State.PENDING.value, Video.next_poll_at <= now)
    ).scalar_one()
    overdue = session.execute(
        select(func.count())
        .select_from(Video)
        .where(
            Video.state == State.PENDING.value,
            Video.next_poll_at < now - timedelta(seconds=policy.poll_interval_max),
        )
    ).scalar_one()
    oldest = session.execute(
        select(Video.video_id, Video.enqueued_at)
        .where(Video.state == State.PENDING.value)
        .order_by(Video.enqueued_at, Video.video_id)
        .limit(1)
    ).one_or_none()
    recent = PollMinute.minute >= now - timedelta(minutes=5)
    hour = session.execute(
        select(
            func.coalesce(func.sum(PollMinute.polls), 0),
            func.coalesce(func.sum(PollMinute.errors), 0),
            func.coalesce(func.sum(PollMinute.rate_limited), 0),
            func.coalesce(func.sum(PollMinute.unauthorized), 0),
            func.coalesce(func.sum(case((recent, PollMinute.polls), else_=0)), 0),
            func.coalesce(func.sum(case((recent, PollMinute.errors), else_=0)), 0),
        ).where(PollMinute.minute >= now - timedelta(hours=1))
    ).one()
    control = session.get(TrackerControl, CONTROL_ROW_ID)
    limiter = _limiter_view(control) if control else LimiterView()
    return Summary(
        now=now,
        counts=counts,
        due_now=due_now,
        oldest_pending_id=oldest[0] if oldest else None,
        oldest_pending_since=oldest[1] if oldest else None,
        polls_last_hour=int(hour[0]),
        errors_last_hour=int(hour[1]),
        rate_limited_last_hour=int(hour[2]),
        unauthorized_last_hour=int(hour[3]),
        auth_failing=bool(control and control.auth_failing),
        auth_error=control.auth_error if control else None,
        auth_failed_at=control.auth_failed_at if control else None,
        auth_paused_until=control.auth_paused_until if control else None,
        throttled_until=control.throttled_until if control else None,
        rate_factor=effective_rate_factor(limiter, now, policy),
        last_dispatch_at=control.last_dispatch_at if control else None,
        polls_last_5_minutes=int(hour[4]),
        errors_last_5_minutes=int(hour[5]),
        overdue=int(overdue),
        scheduler_read_at=control.scheduler_read_at if control else None,
        scheduler_ok_at=control.scheduler_ok_at if control else None,
        scheduler_failures=control.scheduler_failures if control else 0,
        scheduler_error=control.scheduler_error if control else None,
        scheduler_executing=control.scheduler_executing if control else None,
    )


def callbacks_owed(session: Session) -> int:
    """Webhook deliveries not yet made nor given up, for the metrics."""
    outbox = _table(CallbackDelivery)
    owed = session.execute(
        select(func.count())
        .select_from(outbox)
        .where(outbox.c.delivered_at.is_(None), outbox.c.failed_at.is_(None))
    ).scalar_one()
    return int(owed)


def status_filter(status: str) -> Any:
    """``--status`` matches the upstream status name (any case) or its number."""
    text = status.strip()
    if text.lstrip("-").isdigit():
        return Video.status_code == int(text)
    return func.upper(Video.status_name) == text.upper()


def list_query(
    *,
    state: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int | None = 100,
) -> Select[Video]:
    query = select(Video)
    if state:
        query = query.where(Video.state == state)
    if status:
        query = query.where(status_filter(status))
    if since is not None:
        # "finished since": served by the (done_at, video_id) index
        query = query.where(Video.done_at >= since).order_by(Video.done_at, Video.video_id)
    else:
        query = query.order_by(Video.enqueued_at, Video.video_id)
    if limit is not None:
        query = query.limit(limit)
    return query


def list_videos(session: Session, **filters: Any) -> list[Video]:
    return list(session.scalars(list_query(**filters)))


def count_videos(session: Session, **filters: Any) -> int:
    """How many rows ``list_videos`` with these filters would give without a limit."""
    query = list_query(**filters, limit=None).order_by(None)
    return int(session.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def finished_after(
    session: Session,
    *,
    after: tuple[datetime, str] | None,
    settle: float,
    limit: int,
    status_code: int | None = None,
) -> list[Video]:
    """Done rows after the (done_at, video_id) cursor that finished at least ``settle`` s ago.

    Keyset pagination on the (done_at, video_id) index.
    """
    horizon = current_time(session) - timedelta(seconds=settle)
    query = select(Video).where(Video.state == State.DONE.value, Video.done_at <= horizon)
    if after is not None:
        query = query.where(tuple_(Video.done_at, Video.video_id) > tuple_(*after))
    if status_code is not None:
        query = query.where(Video.status_code == status_code)
    query = query.order_by(Video.done_at, Video.video_id).limit(limit)
    return list(session.scalars(query))


def prune_batch(
    session: Session, older_than: timedelta, batch: int = 10_000
) -> tuple[int, int, int]:
    """Delete one batch of history older than ``older_than``.

    Returns (events, poll minutes, delivered callbacks) removed. Rows in ``videos`` are the
    product and are never pruned, nor are callbacks still owed or failed (an operator may want
    to see those). Batches keep each transaction short; call until all counts are 0.
    """
    cutoff = current_time(session) - older_than
    old_events = (
        select(VideoEvent.id).where(VideoEvent.at < cutoff).order_by(VideoEvent.id).limit(batch)
    )
    events = session.execute(
        delete(VideoEvent)
        .where(VideoEvent.id.in_(old_events.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    minutes = session.execute(
        delete(PollMinute)
        .where(PollMinute.minute < cutoff)
        .execution_options(synchronize_session=False)
    )
    outbox = _table(CallbackDelivery)
    old_deliveries = (
        select(outbox.c.id).where(outbox.c.delivered_at < cutoff).order_by(outbox.c.id).limit(batch)
    )
    deliveries = session.execute(
        delete(outbox).where(outbox.c.id.in_(old_deliveries.scalar_subquery()))
    )
    return (
        int(events.rowcount),  # type: ignore[attr-defined]
        int(minutes.rowcount),  # type: ignore[attr-defined]
        int(deliveries.rowcount),  # type: ignore[attr-defined]
    )


def get_video(session: Session, video_id: str) -> Video | None:
    return session.get(Video, video_id)


def events_for(session: Session, video_id: str) -> list[VideoEvent]:
    return list(
        session.scalars(
            select(VideoEvent).where(VideoEvent.video_id == video_id).order_by(VideoEvent.id)
        )
    )


def done_event_counts(session: Session) -> dict[str, int]:
    """How many 'done' events each id has (exactly one is the promise)."""
    rows = session.execute(
        select(VideoEvent.video_id, func.count())
        .where(VideoEvent.kind == "done")
        .group_by(VideoEvent.video_id)
    )
    return {video_id: count for video_id, count in rows}

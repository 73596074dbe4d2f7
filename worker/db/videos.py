"""SQL on ``videos`` rows outside the claim: enqueue, a decision written, hints, releases.

Every write to a claimed row is guarded by its claim token and ``state = 'pending'``: a late or
duplicate answer can never move a finished row, nor overwrite a newer claimant's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, case, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pixverse_tracker.db.sql import (
    CHUNK,
    NOTIFY_CHANNEL,
    add_events,
    chunks,
    current_time,
    db_now,
    id_in,
    is_postgres,
    table_of,
)
from pixverse_tracker.models import Video
from pixverse_tracker.rules.events import EventKind
from pixverse_tracker.rules.row import Decision, EventSpec
from pixverse_tracker.rules.state import State


def insert(
    session: Session,
    video_ids: Sequence[str],
    *,
    now: datetime,
    first: datetime,
    firsts: dict[str, datetime] | None,
    retrack: bool,
    webhook_url: str | None,
) -> tuple[list[str], list[str]]:
    """Insert the ids that are new (first looked at ``first``, or at ``firsts[id]``); with
    ``retrack``, re-arm the finished ones. Returns (added, re-armed).

    A batch is one statement (Postgres: the ids travel as one array), not a round trip per id.
    """
    insert_new = _insert_new_pg if is_postgres(session) else _insert_new_portable
    added: list[str] = []
    rearmed: list[str] = []
    for chunk in chunks(video_ids, 50_000 if is_postgres(session) else CHUNK):
        new = insert_new(session, chunk, now, first, webhook_url, firsts)
        added.extend(new)
        if retrack and len(new) < len(chunk):
            fresh = set(new)
            existing = [v for v in chunk if v not in fresh]
            rearmed.extend(_rearm(session, existing, now, first, webhook_url))
    add_events(session, now, [(v, EventSpec(EventKind.RETRACKED)) for v in rearmed])
    return added, rearmed


_INSERT_NEW_PG = text(
    f"""
    WITH added AS (
        INSERT INTO videos (video_id, state, enqueued_at, updated_at, next_poll_at,
                            poll_count, error_count, webhook_url)
        SELECT v, 'pending', :now, :now, coalesce(to_timestamp(f), :first), 0, 0, :webhook_url
        FROM unnest(:ids, :firsts) AS t(v, f)
        ON CONFLICT (video_id) DO NOTHING
        RETURNING video_id
    ), logged AS (
        INSERT INTO video_events (video_id, at, kind)
        SELECT video_id, :now, '{EventKind.ENQUEUED.value}' FROM added
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
    webhook_url: str | None,
    firsts: dict[str, datetime] | None = None,
) -> list[str]:
    params = {
        "ids": list(video_ids),
        # NULL where an id has no grid of its own: it takes :first
        "firsts": [_epoch(firsts.get(v)) for v in video_ids] if firsts else [None] * len(video_ids),
        "now": now,
        "first": first,
        "webhook_url": webhook_url,
    }
    return list(session.execute(_INSERT_NEW_PG, params).scalars())


def _epoch(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


def _insert_new_portable(
    session: Session,
    video_ids: Sequence[str],
    now: datetime,
    first: datetime,
    webhook_url: str | None,
    firsts: dict[str, datetime] | None = None,
) -> list[str]:
    rows = [
        {
            "video_id": video_id,
            "state": State.PENDING,
            "enqueued_at": now,
            "updated_at": now,
            "next_poll_at": (firsts or {}).get(video_id, first),
            "poll_count": 0,
            "error_count": 0,
            "webhook_url": webhook_url,
        }
        for video_id in video_ids
    ]
    stmt = (
        sqlite.insert(table_of(Video))
        .on_conflict_do_nothing(index_elements=["video_id"])
        .returning(table_of(Video).c.video_id)
    )
    new = list(session.execute(stmt, rows).scalars())
    add_events(session, now, [(v, EventSpec(EventKind.ENQUEUED)) for v in new])
    return new


def _rearm(
    session: Session,
    video_ids: Sequence[str],
    now: datetime,
    first: datetime,
    webhook_url: str | None,
) -> list[str]:
    # a re-armed id keeps its webhook URL unless a new one is given
    new_url = {"webhook_url": webhook_url} if webhook_url is not None else {}
    stmt = (
        update(Video)
        .where(Video.video_id.in_(video_ids), Video.state != State.PENDING)
        .values(
            **new_url,
            state=State.PENDING,
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


def _decision_update(
    video_id: str, token: str, decision: Decision, sent_at: datetime | None
) -> Any:
    now = decision.changes.updated_at
    changes = decision.changes.as_columns()
    if sent_at is not None and decision.pause is None and "next_poll_at" in changes:
        # A push that arrived while this request was out: the answer may predate it.
        changes["next_poll_at"] = case(
            (Video.hinted_at >= sent_at, now), else_=changes["next_poll_at"]
        )
    return (
        update(Video)
        .where(
            Video.video_id == video_id,
            Video.claim_token == token,
            Video.state == State.PENDING,
        )
        .values(state=decision.state, **changes)
        .execution_options(synchronize_session=False)
    )


def write_decision(
    session: Session,
    video_id: str,
    token: str,
    decision: Decision,
    sent_at: datetime | None = None,
) -> bool:
    """Write one decision's row, guarded by the claim token and ``state = 'pending'``.

    Returns False (and writes nothing) when the claim no longer holds. ``sent_at``: when the
    request went out; a push that arrived since makes the row due at once.
    """
    stmt = _decision_update(video_id, token, decision, sent_at)
    return bool(session.execute(stmt).rowcount == 1)  # type: ignore[attr-defined]


def write_final(
    session: Session,
    video_id: str,
    token: str,
    decision: Decision,
    sent_at: datetime | None = None,
) -> dict[str, Any] | None:
    """``write_decision`` for a row that finishes: the row as written (every column), or None
    when the claim no longer holds."""
    stmt = _decision_update(video_id, token, decision, sent_at)
    row = session.execute(stmt.returning(*table_of(Video).c)).mappings().one_or_none()
    return dict(row) if row is not None else None


def notify_done(session: Session, video_id: str) -> None:
    """``NOTIFY video_done`` (Postgres): transactional, so listeners hear it only if the row
    really became done."""
    if is_postgres(session):
        session.execute(select(func.pg_notify(NOTIFY_CHANNEL, video_id)))


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
        .where(Video.video_id == video_id, Video.state == State.PENDING)
        .values(hinted_at=now)
        .execution_options(synchronize_session=False)
    )
    moved = session.execute(
        update(Video)
        .where(
            Video.video_id == video_id,
            Video.state == State.PENDING,
            Video.next_poll_at > now,
            or_(Video.claim_token.is_(None), Video.claimed_until <= now),
        )
        .values(next_poll_at=now, claimed_until=None, claim_token=None, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if moved:
        add_events(session, now, [(video_id, EventSpec(EventKind.HINTED, "upstream push"))])
    return bool(moved)


def note_list_missed(session: Session, token: str, video_ids: Sequence[str]) -> None:
    """Remember that the list did not show these claimed ids: they are fetched by id next."""
    session.execute(
        update(Video)
        .where(id_in(session, video_ids), Video.claim_token == token)
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
            id_in(session, video_ids), Video.state == State.PENDING
        )
    ).all()
    moved = sorted(v for v, known in ours if known != offset)
    if moved:
        locked = (
            select(Video.video_id)
            .where(id_in(session, moved), Video.state == State.PENDING)
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
            Video.state == State.PENDING,
        )
        .values(
            next_poll_at=until if until is not None else db_now(),
            claimed_until=None,
            claim_token=None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]

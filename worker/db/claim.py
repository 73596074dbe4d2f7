"""SQL of the claim: due rows locked and claimed under a fencing token, their leases, and the
rows a poll batch still holds.

The control row's lock (``db.control.lock``) serialises dispatchers; ``SKIP LOCKED`` keeps a
dispatcher from waiting on rows a worker is writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import bindparam, or_, select, text, update
from sqlalchemy.orm import Session

from pixverse_tracker.db.sql import current_time, id_in, is_postgres
from pixverse_tracker.models import CONTROL_ROW_ID, TrackerControl, UTCDateTime, Video
from pixverse_tracker.rules.row import RowView
from pixverse_tracker.rules.state import State

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


def claim_rows(
    session: Session, horizon_end: datetime, limit: int, token: str
) -> list[tuple[str, datetime, datetime | None, int | None]]:
    """Lock and claim up to ``limit`` rows due by ``horizon_end``, soonest first (their leases
    are set once their requests have slots: ``set_leases``)."""
    rows = session.execute(
        select(Video.video_id, Video.next_poll_at, Video.list_missed_at, Video.list_offset)
        .where(
            Video.state == State.PENDING,
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
            .where(id_in(session, [r[0] for r in rows]))
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


_VIEW_COLUMNS = (
    Video.video_id,
    Video.enqueued_at,
    Video.poll_count,
    Video.error_count,
    Video.status_code,
    Video.record.is_not(None),
    Video.webhook_url,
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
        if row[-1] is State.PENDING
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
                id_in(session, video_ids),
                Video.state == State.PENDING,
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
        .where(id_in(session, free))
        .values(claimed_until=until, next_poll_at=until, claim_token=token)
        .returning(*_VIEW_COLUMNS)
        .execution_options(synchronize_session=False)
    ).all()
    return {str(r[0]): _row_view(r) for r in rows}

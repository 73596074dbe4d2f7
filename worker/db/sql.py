"""What every SQL module shares: the database clock, bulk-statement helpers, the event log.

Functions take a Session and never commit: the caller (the service layer, the CLI) owns the
transaction. Times come from the database's clock (``db_now``), never from the worker's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, Text, any_, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import FunctionElement

from pixverse_tracker.models import UTCDateTime, Video, VideoEvent
from pixverse_tracker.rules.row import EventSpec

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


def table_of(model: type[Any]) -> Table:
    """The Core table behind a model, for bulk statements that bypass the ORM unit of work."""
    return cast(Table, model.__table__)


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_for(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def id_in(session: Session, video_ids: Sequence[str]) -> Any:
    if is_postgres(session):
        # one array parameter, and a plan of primary-key lookups whatever the count
        return Video.video_id == any_(
            bindparam("ids", list(video_ids), type_=postgresql.ARRAY(Text))
        )
    return Video.video_id.in_(list(video_ids))


def add_events(session: Session, now: datetime, events: Iterable[tuple[str, EventSpec]]) -> None:
    rows = [
        {
            "video_id": video_id,
            "at": now,
            "kind": spec.kind.value,
            "http_status": spec.http_status,
            "status_code": spec.status_code,
            "status_name": spec.status_name,
            "message": spec.message,
        }
        for video_id, spec in events
    ]
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(table_of(VideoEvent)), rows[start : start + CHUNK])

"""The database as the faces (cli, web) meet it: its schema brought to head or checked, and
what an error from it means in one line. The faces use these, never ``db/`` itself."""

from __future__ import annotations

from dataclasses import dataclass

from pixverse_tracker.db import engines, revisions
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import Settings

VERSION_TABLE = revisions.VERSION_TABLE
LEGACY_VERSION_TABLE = revisions.LEGACY_VERSION_TABLE


@dataclass(frozen=True)
class Migrated:
    """What `migrate` did: the revision before and after, and the one moved over from
    ``alembic_version`` on the way (None when there was none)."""

    before: str | None
    after: str | None
    moved: str | None


def migrate(settings: Settings) -> Migrated:
    """Bring the settings' database to the newest revision (safe to run again), on an engine
    of its own that is closed afterwards."""
    engine = engines.make_engine(settings.database_url, pool=False, schema=settings.db_schema)
    try:
        before = revisions.current_revision(engine)
        moved = revisions.upgrade(engine)
        after = revisions.current_revision(engine)
    finally:
        engine.dispose()
    return Migrated(before, after, moved)


def upgrade(rt: Runtime) -> None:
    """Bring the runtime's database to the newest revision (the embedded SQLite file)."""
    revisions.upgrade(rt.engine)


def current_revision(rt: Runtime) -> str | None:
    """The revision the runtime's database is at; None when it has no tracker tables."""
    return revisions.current_revision(rt.engine)


def head_revision() -> str | None:
    """The newest revision this version of the tracker knows."""
    return revisions.head_revision()


def is_known_revision(revision: str) -> bool:
    """Whether this version's migrations know ``revision`` (a newer deploy's would not)."""
    return revisions.is_known_revision(revision)


def describe_error(exc: BaseException) -> str:
    """A database error in one line: the driver's own first line, no SQL, no parameters."""
    return engines.describe_error(exc)

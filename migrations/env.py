"""Alembic environment: migrates the database the tracker's own settings point at."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.db.revisions import VERSION_TABLE, adopt_legacy_revision, ensure_schema
from pixverse_tracker.models import metadata
from pixverse_tracker.settings import DATABASE, load


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # A table in the database but not in the models is not ours to drop: an application's
    # table (and its alembic_version) in a shared database, or the completed_videos view,
    # which a migration creates by hand.
    return not (type_ == "table" and reflected and compare_to is None)


def _run(connection: Connection) -> None:
    # Before Alembic reads the version table: the schema it lives in, and the tracker's row
    # moved out of the alembic_version an application may share (in this same transaction).
    ensure_schema(connection)
    context.config.attributes["moved_revision"] = adopt_legacy_revision(connection)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=_include_object,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:  # handed in by `pixverse-tracker migrate` or the tests
        _run(connection)
        return
    # A bare `alembic upgrade` must name its database too, never migrate a stray local file.
    settings = load(needs=(DATABASE,))
    url = config.attributes.get("database_url") or settings.require_database()
    engine = make_engine(url, pool=False, schema=settings.db_schema)
    try:
        # One transaction for the move and the migrations: Alembic joins one begun outside it.
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()

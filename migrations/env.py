"""Alembic environment: migrates the database the tracker's own settings point at."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from models import metadata
from worker import db
from worker.settings import DATABASE, load


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # The completed_videos view is created by hand in a migration; it is not a table to drop.
    return not (type_ == "table" and name == "completed_videos")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=_include_object,
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
    url = config.attributes.get("database_url") or load(needs=(DATABASE,)).require_database()
    engine = db.make_engine(url, pool=False)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()

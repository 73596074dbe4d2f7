"""The schema's revision: Alembic's config, ``upgrade``, and the tracker's own version table.

The revision lives in ``pixverse_tracker_alembic_version``, so that an application's Alembic
can share the database; a revision an earlier version left in ``alembic_version`` is moved.
Alembic is imported only when a function here runs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, inspect, select, text
from sqlalchemy.exc import ProgrammingError

from pixverse_tracker.db.engines import SCHEMA_OPTION, describe_error

# Alembic finds the migrations as package data, wherever the package is installed.
MIGRATIONS = "pixverse_tracker:migrations"


# The tracker's own Alembic version table, so that an application's Alembic (which uses the
# default ``alembic_version``) can share the database. Earlier versions kept the tracker's
# revision in ``alembic_version``; ``adopt_legacy_revision`` moves it over.
VERSION_TABLE = "pixverse_tracker_alembic_version"

LEGACY_VERSION_TABLE = "alembic_version"

# A table only the tracker creates: with one of our revision ids, it tells our row in
# ``alembic_version`` from an application's that happens to use the same id ("0001").
_OWN_TABLE = "tracker_control"


def alembic_config(url: str | None = None) -> Any:
    """An Alembic config that finds the packaged migrations wherever the tracker is installed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    if url is not None:
        config.attributes["database_url"] = url
    return config


def upgrade(engine: Engine) -> str | None:
    """Bring the schema to the newest revision (safe to run again).

    Returns the revision moved over from ``alembic_version`` on the way, if there was one.
    """
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    moved: str | None = config.attributes.get("moved_revision")
    return moved


def _migration_context(connection: Connection) -> Any:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})


def current_revision(engine: Engine) -> str | None:
    """The tracker's revision: from its own version table, or still in ``alembic_version``
    until the next ``migrate`` moves it (the schema is the same either way)."""
    with engine.connect() as connection:
        revision: str | None = _migration_context(connection).get_current_revision()
        return revision or _legacy_revision(connection, _legacy_table())


def _legacy_table() -> Table:
    # Alembic's own shape of the version table; only the column is read or written here.
    return Table(LEGACY_VERSION_TABLE, MetaData(), Column("version_num", String(32)))


def _legacy_revision(connection: Connection, legacy: Table) -> str | None:
    """The tracker's revision in ``alembic_version``: an id of ours, beside the tracker's tables.

    Any other row is an application's, and stays where it is.
    """
    from alembic.script import ScriptDirectory

    inspector = inspect(connection)
    if not (inspector.has_table(LEGACY_VERSION_TABLE) and inspector.has_table(_OWN_TABLE)):
        return None
    script = ScriptDirectory.from_config(alembic_config())
    ours = {revision.revision for revision in script.walk_revisions()}
    rows = connection.execute(select(legacy.c.version_num)).scalars()
    # The tracker's history has no branches, so one row at most is ours.
    return next((revision for revision in rows if revision in ours), None)


def adopt_legacy_revision(connection: Connection) -> str | None:
    """Move the tracker's row from ``alembic_version`` into the tracker's own version table.

    Runs in the migration's transaction, before Alembic reads the version table: no migration
    can do this, since Alembic must know the current revision before it runs one. The table
    is dropped once empty (it held only the tracker's row); another project's row is never
    touched. Returns the revision moved, or None.
    """
    from alembic.script import ScriptDirectory

    legacy = _legacy_table()
    revision = _legacy_revision(connection, legacy)
    if revision is None:
        return None
    connection.execute(legacy.delete().where(legacy.c.version_num == revision))
    if connection.execute(select(legacy.c.version_num).limit(1)).first() is None:
        legacy.drop(connection)
    context = _migration_context(connection)
    if context.get_current_heads():
        return None  # the tracker's own table already has a revision: the newer record wins
    context.stamp(ScriptDirectory.from_config(alembic_config()), revision)
    return revision


def ensure_schema(connection: Connection) -> None:
    """Create the engine's TRACKER_DB_SCHEMA if it is missing (Postgres).

    Checked before created: ``CREATE SCHEMA IF NOT EXISTS`` needs the right to create schemas
    even when the schema exists, which a role given only its own schema does not have.
    """
    from alembic.util import CommandError

    schema = connection.get_execution_options().get(SCHEMA_OPTION)
    if schema is None:
        return
    found = connection.execute(
        text("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :schema"), {"schema": schema}
    ).first()
    if found is not None:
        return
    try:
        quoted = connection.dialect.identifier_preparer.quote(schema)
        connection.execute(text(f"CREATE SCHEMA {quoted}"))
    except ProgrammingError as exc:
        raise CommandError(
            f"TRACKER_DB_SCHEMA={schema!r} does not exist and this role may not create it "
            f"({describe_error(exc)}): create it as an owner, e.g. CREATE SCHEMA {quoted} "
            "AUTHORIZATION <the migrate role>"
        ) from None


def is_known_revision(revision: str) -> bool:
    """Whether this version's migrations know ``revision`` (a newer deploy's would not)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()

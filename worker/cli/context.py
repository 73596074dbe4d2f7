"""What every command shares: its one-line error, its settings (with the embedded database's
rules), and a runtime whose schema has been checked."""

from __future__ import annotations

import sys
from collections.abc import Collection

from pixverse_tracker.rules.errors import TrackerError
from pixverse_tracker.service import database, runtime
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import DATABASE, Settings, load

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(TrackerError):
    """A failure worth one clear line to the user, never a traceback."""


def settings_for(command: str, needs: Collection[str] = (DATABASE,)) -> Settings:
    """The settings a command uses (it is refused over those only), with its database checked:
    without DATABASE_URL the embedded SQLite file is `run`'s; `migrate`, `worker` and `beat`
    refuse, and the other commands use the file only when it exists, saying so."""
    settings = load(needs=needs)
    if not settings.embedded_database or command == "run":
        return settings
    path = settings.embedded_database_path
    if command in ("migrate", "worker", "beat"):
        raise CommandError(
            f"DATABASE_URL is not set: `{command}` works on the database you name "
            "(postgresql://user@host/db, or sqlite:///path.db); only `run` falls back to the "
            f"embedded {path}"
        )
    if not path.is_file():
        raise CommandError(
            f"DATABASE_URL is not set and there is no embedded database at {path}: set "
            "DATABASE_URL to the tracker's database (only `run` creates the embedded one)"
        )
    print(
        f"pixverse-tracker: using the embedded database {path} (DATABASE_URL is not set)",
        file=sys.stderr,
    )
    return settings


def open_runtime(settings: Settings | None = None, *, migrate_sqlite: bool = True) -> Runtime:
    """Settings, engine and a schema check. The embedded SQLite database migrates itself."""
    rt = Runtime(settings or load())
    runtime.install(rt)
    head = database.head_revision()
    current = database.current_revision(rt)
    if current != head:
        if current is not None and not database.is_known_revision(current):
            raise CommandError(
                f"the database schema is at revision {current}, which this version does not "
                f"know (it needs {head}): was it migrated by a newer version of the tracker?"
            )
        if rt.settings.is_sqlite and migrate_sqlite:
            database.upgrade(rt)
        elif current is None:
            raise CommandError(
                "the database has no tracker tables yet: run `pixverse-tracker migrate`"
            )
        else:
            raise CommandError(
                f"the database schema is at revision {current}, this version needs {head}: "
                "run `pixverse-tracker migrate`"
            )
    return rt

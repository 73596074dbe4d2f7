"""Engines and sessions: how the tracker connects to its database, and what a failure means.

Nothing here runs at import time; each process (and each Celery child after a fork) builds
its own engine through ``make_engine``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from pixverse_tracker.settings import SettingsError, normalize_database_url

# The engine execution option that carries TRACKER_DB_SCHEMA to the migration environment.
SCHEMA_OPTION = "tracker_schema"


def make_engine(
    url: str, *, pool: bool = True, pool_size: int = 5, schema: str | None = None
) -> Engine:
    """An engine for ``url`` (Postgres via psycopg2, or SQLite), tuned for the tracker.

    With ``schema`` (Postgres), every connection's ``search_path`` is that schema alone, so the
    tracker's unqualified SQL finds its own tables and never an application's of the same name.
    """
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if schema is not None:
        options["execution_options"] = {SCHEMA_OPTION: schema}
    if pool:
        options.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    else:
        options["poolclass"] = NullPool
    engine = create_engine(
        url,
        # Fail fast instead of hanging when the server is gone; keepalives spot dead peers.
        connect_args={
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "application_name": "pixverse-tracker",
        },
        **options,
    )
    if schema is not None:
        _pin_search_path(engine, schema)
    return engine


def _pin_search_path(engine: Engine, schema: str) -> None:
    statement = f"SET SESSION search_path TO {engine.dialect.identifier_preparer.quote(schema)}"

    # SQLAlchemy's recipe: in autocommit, so the SET is not undone by the rollback the pool
    # issues when a connection comes back. insert=True: before the dialect's first queries.
    @event.listens_for(engine, "connect", insert=True)
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute(statement)
        dbapi_connection.autocommit = autocommit


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        path = Path(database)
        # an OSError here (the folder is a file, no permission) names the path for the CLI
        private_folder(path.parent)
        private_files(path)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    # pysqlite's own transaction handling defers BEGIN and would let two writers both read and
    # then deadlock on upgrade; take the write lock up front (BEGIN IMMEDIATE) instead. This is
    # SQLAlchemy's documented recipe for serializable SQLite.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# The files SQLite keeps next to a database (it gives them the database file's own mode).
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_folder(folder: Path) -> None:
    """The folder of a SQLite database: created 0700, or an existing one checked.

    The database holds every record and error the tracker stored; another user who owns the
    folder, or may write in it, could read it, swap it or plant its -wal file. So a folder owned
    by someone else, or writable by every user, is refused (SettingsError, one line). A folder
    writable by its group is accepted: with the per-user groups most systems give (umask 002)
    that group is its owner alone. An existing folder's mode is never changed.
    """
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)  # exactly: mkdir's mode passes through the umask
        return
    info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    hint = "set TRACKER_DATA_DIR (or the path in DATABASE_URL) to a folder of your own"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise SettingsError(
            f"the database folder {folder} belongs to another user (uid {info.st_uid}, "
            f"this is uid {os.geteuid()}): {hint}"
        )
    if info.st_mode & stat.S_IWOTH:
        raise SettingsError(
            f"the database folder {folder} is writable by every user "
            f"(mode {stat.S_IMODE(info.st_mode):o}): {hint}, or `chmod o-w` it"
        )


def private_files(database: Path) -> None:
    """The database file 0600 from its creation, so the files SQLite makes beside it (which
    copy its mode) are 0600 too; files of ours left readable by an older version are closed."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    for path in (database, *(Path(f"{database}{suffix}") for suffix in SQLITE_SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            info = path.stat()
            if info.st_mode & 0o077 and (not hasattr(os, "geteuid") or info.st_uid == os.geteuid()):
                path.chmod(0o600)


def describe_error(exc: BaseException) -> str:
    """The first line of the driver's own message: no SQL, no parameters, no traceback."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


# SQLSTATE classes that say the database cannot take a write right now, whatever the values:
# connection exception, transaction rollback (serialization, deadlock), insufficient
# resources, operator intervention (shutdown, cancel), system error.
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether a failed write says the database is unavailable (retry the same write later),
    rather than that it refused what was written (a value, a constraint, a bug)."""
    if isinstance(exc, sqlalchemy_exc.TimeoutError):  # no pooled connection came free
        return True
    if isinstance(exc, sqlalchemy_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, sqlalchemy_exc.OperationalError | sqlalchemy_exc.InterfaceError):
        return False
    code = getattr(exc.orig, "pgcode", None)
    # No SQLSTATE: the connection itself failed (or SQLite was busy or locked).
    return code is None or str(code)[:2] in _UNAVAILABLE_CLASSES


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: tasks read results after the transaction without reloading.
    return sessionmaker(engine, expire_on_commit=False)

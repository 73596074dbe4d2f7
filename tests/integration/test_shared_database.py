"""Beside an application's own schema: its Alembic history, its tables, a schema of our own.

The tracker keeps its revision in ``pixverse_tracker_alembic_version``, so an application whose
Alembic uses the default ``alembic_version`` shares the database; an older tracker database has
its row moved over by ``migrate``. With ``TRACKER_DB_SCHEMA`` every tracker object lives in that
schema and the application's tables of the same name are never touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from pixverse_tracker import api
from pixverse_tracker.cli.main import main
from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.db.revisions import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
)
from pixverse_tracker.testing import Simulator, make_id
from tests.conftest import empty_database
from tests.integration.test_migrations import _alembic_check
from tests.integration.test_poller import TOKEN, drive, heard, listening, tracker

FOREIGN_REVISION = "ae1027a6acf"  # what an application's Alembic revision id looks like
TRACKER_TABLES = {"videos", "video_events", "tracker_control", "poll_minutes", "webhook_outbox"}


@pytest.fixture(params=["postgresql", "sqlite"])
def blank(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """An empty database on either backend: its URL and an engine without a schema setting."""
    if request.param == "sqlite":
        url = f"sqlite:///{(tmp_path / 'shared.db').as_posix()}"
        engine = make_engine(url, pool=False)
        yield url, engine
        engine.dispose()
        return
    with empty_database("pt_shared") as url:
        engine = make_engine(url, pool=False)
        yield url, engine
        engine.dispose()


def sql(engine: Engine, statement: str) -> list[tuple[object, ...]]:
    with engine.begin() as conn:
        result = conn.execute(text(statement))
        return [tuple(row) for row in result] if result.returns_rows else []


def migrate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, **env: str
) -> str:
    """``pixverse-tracker migrate`` in this process; its output."""
    monkeypatch.setenv("DATABASE_URL", url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 0
    return capsys.readouterr().out


def an_application_with_its_own_alembic(engine: Engine, revision: str = FOREIGN_REVISION) -> None:
    # What `alembic upgrade` of another project leaves: its version row and its tables.
    sql(
        engine,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
    )
    sql(engine, f"INSERT INTO alembic_version VALUES ('{revision}')")
    sql(engine, "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
    sql(engine, "INSERT INTO accounts VALUES (1, 'me@example.com')")


def as_an_earlier_version_left_it(engine: Engine, revision: str) -> None:
    """The tracker at ``revision`` with its row in ``alembic_version``, as earlier versions kept
    it: migrated today, then its version table renamed back to Alembic's default name."""
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.execute(text(f"ALTER TABLE {VERSION_TABLE} RENAME TO alembic_version"))
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    f"ALTER TABLE alembic_version RENAME CONSTRAINT {VERSION_TABLE}_pkc "
                    "TO alembic_version_pkc"
                )
            )


def tables_in(engine: Engine, schema: str) -> set[str]:
    found = sql(engine, f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}'")
    return {str(name) for (name,) in found}


def head() -> str:
    revision = head_revision()
    assert revision is not None
    return revision


# --- another project's Alembic history ----------------------------------------------------------


def test_migrate_succeeds_on_a_database_with_another_projects_alembic_history(
    blank: tuple[str, Engine],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, engine = blank
    an_application_with_its_own_alembic(engine)

    out = migrate(monkeypatch, capsys, url)

    assert out.strip() == f"schema migrated from empty to {head()}"
    assert sql(engine, "SELECT version_num FROM alembic_version") == [(FOREIGN_REVISION,)]
    assert sql(engine, f"SELECT version_num FROM {VERSION_TABLE}") == [(head(),)]
    assert sql(engine, "SELECT id, email FROM accounts") == [(1, "me@example.com")]
    # the application's tables are not drift in the tracker's models
    check = _alembic_check(url)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_application_revision_with_the_same_id_as_ours_stays_the_applications(
    blank: tuple[str, Engine],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, engine = blank
    ours = ScriptDirectory.from_config(alembic_config()).get_base()
    assert isinstance(ours, str)
    an_application_with_its_own_alembic(engine, revision=ours)

    out = migrate(monkeypatch, capsys, url)

    # no tracker tables beside it, so the row is not the tracker's: every migration ran
    assert out.strip() == f"schema migrated from empty to {head()}"
    assert sql(engine, "SELECT version_num FROM alembic_version") == [(ours,)]
    assert set(inspect(engine).get_table_names()) >= TRACKER_TABLES


def test_an_earlier_tracker_database_upgrades_and_its_revision_moves_to_its_own_table(
    blank: tuple[str, Engine],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, engine = blank
    previous = ScriptDirectory.from_config(alembic_config()).get_revision(head()).down_revision
    assert isinstance(previous, str)
    as_an_earlier_version_left_it(engine, previous)
    sql(
        engine,
        "INSERT INTO videos (video_id, state, enqueued_at, updated_at) "
        "VALUES ('kept', 'pending', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    )
    # until migrate moves it, the revision is still read where it is
    assert current_revision(engine) == previous

    out = migrate(monkeypatch, capsys, url)

    assert out.splitlines() == [
        f"moved revision {previous} from alembic_version to {VERSION_TABLE}",
        f"schema migrated from {previous} to {head()}",
    ]
    assert sql(engine, f"SELECT version_num FROM {VERSION_TABLE}") == [(head(),)]
    assert "alembic_version" not in inspect(engine).get_table_names()  # it held only ours
    assert sql(engine, "SELECT video_id, state FROM videos") == [("kept", "pending")]
    assert migrate(monkeypatch, capsys, url).strip() == f"schema already at revision {head()}"


# --- TRACKER_DB_SCHEMA ----------------------------------------------------------------------------

SCHEMA = "pixverse"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN) as simulator:
        yield simulator


@pytest.fixture
def shared_pg() -> Iterator[tuple[str, Engine]]:
    """A Postgres database where an application already has ``public.videos`` of its own and its
    Alembic history; an admin engine with the server's default search_path."""
    with empty_database("pt_schema") as url:
        admin = create_engine(url)
        an_application_with_its_own_alembic(admin)
        sql(admin, "CREATE TABLE videos (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
        sql(admin, "INSERT INTO videos VALUES (7, 'the application''s own')")
        yield url, admin
        admin.dispose()


def test_the_whole_tracker_works_in_its_own_schema_beside_an_applications_tables(
    shared_pg: tuple[str, Engine],
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, admin = shared_pg

    out = migrate(monkeypatch, capsys, url, TRACKER_DB_SCHEMA=SCHEMA)
    assert out.strip() == f"schema migrated from empty to {head()}"

    # Test-speed timings (test_poller's BASE_ENV); the defaults are covered by the e2e tests.
    with tracker(url, sim, TRACKER_DB_SCHEMA=SCHEMA) as rt, listening(rt.engine) as listener:
        video = make_id("completed_0.3", 1)
        assert api.enqueue([video], rt=rt).added == [video]
        drive(rt, rt.sessions, timeout=20)
        done = api.get(video, rt=rt)
        assert done is not None and done.state == "done" and done.url
        assert video in heard(listener, 2.0)  # NOTIFY reaches listeners as before

    assert tables_in(admin, SCHEMA) == TRACKER_TABLES | {VERSION_TABLE}
    views = sql(admin, f"SELECT viewname FROM pg_views WHERE schemaname = '{SCHEMA}'")
    assert views == [("completed_videos",)]
    indexes = sql(admin, f"SELECT indexname FROM pg_indexes WHERE schemaname = '{SCHEMA}'")
    assert ("ix_videos_due",) in indexes
    assert sql(admin, f"SELECT video_id, state FROM {SCHEMA}.videos") == [(video, "done")]
    # the application's side is exactly as it was
    assert tables_in(admin, "public") == {"alembic_version", "accounts", "videos"}
    assert sql(admin, "SELECT id, title FROM public.videos") == [(7, "the application's own")]
    assert sql(admin, "SELECT version_num FROM public.alembic_version") == [(FOREIGN_REVISION,)]

    check = _alembic_check(url, TRACKER_DB_SCHEMA=SCHEMA)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def migrate_role(shared_pg: tuple[str, Engine]) -> Iterator[str]:
    """A login role that may not create schemas (nor tables in public): the URL it connects by."""
    url, admin = shared_pg
    role = f"pt_owner_{uuid.uuid4().hex[:8]}"
    sql(admin, f"CREATE ROLE {role} LOGIN")
    try:
        yield make_url(url).set(username=role).render_as_string(hide_password=False)
    finally:
        sql(admin, f"DROP OWNED BY {role}")
        sql(admin, f"DROP ROLE {role}")


def test_migrate_fills_a_schema_an_administrator_made_for_a_role_that_cannot_create_one(
    shared_pg: tuple[str, Engine],
    migrate_role: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, admin = shared_pg
    role = make_url(migrate_role).username
    sql(admin, f"CREATE SCHEMA {SCHEMA} AUTHORIZATION {role}")

    out = migrate(monkeypatch, capsys, migrate_role, TRACKER_DB_SCHEMA=SCHEMA)

    assert out.strip() == f"schema migrated from empty to {head()}"
    owners = sql(admin, f"SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = '{SCHEMA}'")
    assert owners == [(role,)]


def test_a_missing_schema_the_role_may_not_create_is_one_line_naming_the_setting(
    migrate_role: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", migrate_role)
    monkeypatch.setenv("TRACKER_DB_SCHEMA", SCHEMA)
    with pytest.raises(SystemExit) as exit_:
        main(["migrate"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"TRACKER_DB_SCHEMA='{SCHEMA}' does not exist and this role may not create it" in err

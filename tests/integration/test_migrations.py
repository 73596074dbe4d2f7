"""The schema comes only from Alembic: it reaches head, is idempotent, and matches the models."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.db.revisions import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from tests.conftest import empty_database

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = Path(sys.executable).with_name("alembic")


@pytest.fixture(scope="module")
def fresh_url() -> Iterator[str]:
    """A brand-new, empty Postgres database (not the shared session one), dropped afterwards."""
    with empty_database("pt_mig") as url:
        yield url


@pytest.fixture(scope="module")
def migrated(fresh_url: str) -> Iterator[Engine]:
    """The fresh database after one ``upgrade``."""
    engine = make_engine(fresh_url, pool=False)
    assert current_revision(engine) is None, "the fresh database should start unmigrated"
    upgrade(engine)
    yield engine
    engine.dispose()


def _alembic_check(database_url: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, **settings}
    return subprocess.run(
        [str(ALEMBIC), "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _record_statements(engine: Engine) -> tuple[list[str], Any]:
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    return seen, listener


def test_upgrade_reaches_head_and_a_second_upgrade_changes_nothing(migrated: Engine) -> None:
    head = head_revision()
    assert head is not None
    assert current_revision(migrated) == head

    seen, listener = _record_statements(migrated)
    try:
        upgrade(migrated)
    finally:
        event.remove(migrated, "before_cursor_execute", listener)

    writes = [
        s
        for s in seen
        if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT", "UPDATE"))
    ]
    assert writes == []
    assert current_revision(migrated) == head
    with migrated.connect() as conn:
        version_rows = text(f"SELECT count(*) FROM {VERSION_TABLE}")
        assert conn.execute(version_rows).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM tracker_control")).scalar_one() == 1


def test_upgrade_creates_the_tables_and_the_completed_videos_view(migrated: Engine) -> None:
    inspector = inspect(migrated)
    tables = set(inspector.get_table_names())
    assert {"videos", "video_events", "tracker_control", "poll_minutes"} <= tables
    assert "completed_videos" in inspector.get_view_names()
    assert "completed_videos" not in tables


def test_the_due_index_is_partial_on_pending_rows(migrated: Engine) -> None:
    with migrated.connect() as conn:
        indexdef = conn.execute(
            text(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'videos' AND indexname = 'ix_videos_due'"
            )
        ).scalar_one()
    # state is varchar(16), so Postgres spells the predicate with casts.
    assert indexdef.endswith(
        "USING btree (next_poll_at) WHERE ((state)::text = 'pending'::text)"
    ), indexdef


def test_the_done_at_index_covers_done_at_then_video_id(migrated: Engine) -> None:
    with migrated.connect() as conn:
        indexdef = conn.execute(
            text(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'videos' AND indexname = 'ix_videos_done_at'"
            )
        ).scalar_one_or_none()
    assert indexdef is not None
    assert indexdef.endswith("(done_at, video_id) WHERE (done_at IS NOT NULL)"), indexdef


def test_long_values_leave_the_videos_row_so_updates_stay_small(migrated: Engine) -> None:
    with migrated.connect() as conn:
        options = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'videos'")
        ).scalar_one()
    assert "toast_tuple_target=128" in options


def test_the_control_row_exists_after_upgrade(migrated: Engine) -> None:
    with migrated.connect() as conn:
        rows = conn.execute(
            text("SELECT id, rate_factor, auth_failing, next_slot_at FROM tracker_control")
        ).all()
    assert [tuple(r) for r in rows] == [(1, 1.0, False, None)]


def test_alembic_check_finds_no_drift_between_models_and_postgres(
    migrated: Engine, fresh_url: str
) -> None:
    result = _alembic_check(fresh_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_alembic_check_fails_when_the_database_is_not_at_head(tmp_path: Path) -> None:
    # Proves the check above can fail: an unmigrated database is reported, not silently accepted.
    result = _alembic_check(f"sqlite:///{(tmp_path / 'empty.db').as_posix()}")
    assert result.returncode != 0


def test_the_same_migrations_build_a_sqlite_database_that_alembic_check_accepts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tracker.db"
    url = f"sqlite:///{path.as_posix()}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        inspector = inspect(engine)
        assert {"videos", "video_events", "tracker_control", "poll_minutes"} <= set(
            inspector.get_table_names()
        )
        assert "completed_videos" in inspector.get_view_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id FROM tracker_control")).scalars().all() == [1]
            due_sql = conn.execute(
                text(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'ix_videos_due'"
                )
            ).scalar_one()
        assert "WHERE state = 'pending'" in due_sql
    finally:
        engine.dispose()
    result = _alembic_check(url)
    assert result.returncode == 0, result.stdout + result.stderr


def _insert_video(session: Session, video_id: str, state: str, status_code: int | None) -> None:
    session.execute(
        text(
            "INSERT INTO videos (video_id, state, status_code, enqueued_at, updated_at) "
            "VALUES (:id, :state, :code, now(), now())"
        ),
        {"id": video_id, "state": state, "code": status_code},
    )


def test_completed_videos_lists_only_done_rows_with_status_completed(
    pg: sessionmaker[Session],
) -> None:
    with pg.begin() as session:
        _insert_video(session, "done-completed", "done", 1)
        _insert_video(session, "done-failed", "done", 8)
        _insert_video(session, "done-moderated", "done", 7)
        _insert_video(session, "pending-completed", "pending", 1)
        _insert_video(session, "abandoned-completed", "abandoned", 1)
        _insert_video(session, "pending-none", "pending", None)
    with pg() as session:
        listed = (
            session.execute(text("SELECT video_id FROM completed_videos ORDER BY video_id"))
            .scalars()
            .all()
        )
    assert listed == ["done-completed"]


# --- 0010: the outbound names say "webhook" ------------------------------------------------------

RENAME_SCHEMA = "tracker_own"


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-schema"])
def at_0009(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, str | None]]:
    """A database at revision 0009 on each backend (Postgres also in a TRACKER_DB_SCHEMA, beside
    an application's own ``public.callback_outbox``): its engine and the schema, if any."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{(tmp_path / 'at_0009.db').as_posix()}", pool=False)
        _migrate_to(engine, "0009")
        yield engine, None
        engine.dispose()
        return
    schema = RENAME_SCHEMA if request.param == "postgresql-schema" else None
    with empty_database("pt_0010") as url:
        if schema is not None:
            admin = make_engine(url, pool=False)
            with admin.begin() as conn:
                conn.execute(text("CREATE TABLE callback_outbox (id INTEGER PRIMARY KEY)"))
                conn.execute(text("INSERT INTO callback_outbox VALUES (7)"))
            admin.dispose()
        engine = make_engine(url, pool=False, schema=schema)
        _migrate_to(engine, "0009")
        yield engine, schema
        if schema is not None:
            with engine.begin() as conn:
                assert conn.execute(text("SELECT id FROM public.callback_outbox")).all() == [(7,)]
        engine.dispose()


def _migrate_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _outbox_names(engine: Engine, table: str, schema: str | None) -> set[str]:
    """The outbox's primary key, foreign key, unique key and index names, as the database has them."""
    inspector = inspect(engine)
    names = {inspector.get_pk_constraint(table, schema=schema)["name"]}
    names |= {fk["name"] for fk in inspector.get_foreign_keys(table, schema=schema)}
    names |= {uq["name"] for uq in inspector.get_unique_constraints(table, schema=schema)}
    names |= {ix["name"] for ix in inspector.get_indexes(table, schema=schema)}
    return {str(name) for name in names if name is not None}


def _names(prefix: str) -> set[str]:
    table = f"{prefix}_outbox"
    return {
        f"pk_{table}",
        f"fk_{table}_video_id_videos",
        f"uq_{table}_idempotency_key",
        f"ix_{table}_video_id",
        f"ix_{table}_due",
    }


def test_0010_renames_the_url_column_and_the_outbox_keeping_their_rows_and_downgrade_restores(
    at_0009: tuple[Engine, str | None],
) -> None:
    engine, schema = at_0009
    now = "CURRENT_TIMESTAMP"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO videos (video_id, state, enqueued_at, updated_at, callback_url) "
                f"VALUES ('v-pending', 'pending', {now}, {now}, 'https://app.example/hook')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO callback_outbox (video_id, url, kind, body, idempotency_key, "
                f"created_at, next_attempt_at) VALUES ('v-pending', 'https://app.example/hook', "
                f"'done', '{{}}', 'key-1', {now}, {now})"
            )
        )

    _migrate_to(engine, "0010")

    assert current_revision(engine) == "0010"
    inspector = inspect(engine)
    tables = set(inspector.get_table_names(schema=schema))
    assert "webhook_outbox" in tables and "callback_outbox" not in tables
    assert _outbox_names(engine, "webhook_outbox", schema) == _names("webhook")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT video_id, webhook_url FROM videos")).all() == [
            ("v-pending", "https://app.example/hook")
        ]
        owed = "SELECT video_id, idempotency_key FROM {} WHERE delivered_at IS NULL"
        assert conn.execute(text(owed.format("webhook_outbox"))).all() == [("v-pending", "key-1")]
        # the view shows the new column name; the id still comes from its (renamed) sequence
        conn.execute(text("SELECT webhook_url FROM completed_videos")).all()
        conn.execute(
            text(
                "INSERT INTO webhook_outbox (video_id, url, kind, body, idempotency_key, "
                f"created_at) VALUES ('v-pending', 'https://app.example/hook', 'done', '{{}}', "
                f"'key-2', {now})"
            )
        )
        ids = conn.execute(text("SELECT id FROM webhook_outbox ORDER BY id")).scalars().all()
        assert len(ids) == 2 and ids[0] < ids[1]
        if engine.dialect.name == "postgresql":
            sequences = set(inspect(conn).get_sequence_names(schema=schema))
            assert "webhook_outbox_id_seq" in sequences
            assert "callback_outbox_id_seq" not in sequences
        conn.execute(text("DELETE FROM webhook_outbox WHERE idempotency_key = 'key-2'"))

    _migrate_to(engine, "0009", down=True)

    assert current_revision(engine) == "0009"
    inspector = inspect(engine)
    tables = set(inspector.get_table_names(schema=schema))
    assert "callback_outbox" in tables and "webhook_outbox" not in tables
    assert _outbox_names(engine, "callback_outbox", schema) == _names("callback")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT video_id, callback_url FROM videos")).all() == [
            ("v-pending", "https://app.example/hook")
        ]
        owed = "SELECT video_id, idempotency_key FROM callback_outbox WHERE delivered_at IS NULL"
        assert conn.execute(text(owed)).all() == [("v-pending", "key-1")]
        conn.execute(text("SELECT callback_url FROM completed_videos")).all()
        if engine.dialect.name == "postgresql":
            sequences = set(inspect(conn).get_sequence_names(schema=schema))
            assert "callback_outbox_id_seq" in sequences

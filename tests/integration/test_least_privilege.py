"""The worker needs only SELECT, INSERT and UPDATE on its tables; DDL stays with migrate."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker import api
from pixverse_tracker.service.batch import poll_batch
from pixverse_tracker.service.dispatch import dispatch
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import load
from pixverse_tracker.testing import Simulator, make_id

# Exactly what docs/security.md tells operators to grant.
GRANTS = """
GRANT CONNECT ON DATABASE "{db}" TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};
"""


@pytest.fixture
def worker_url(pg: sessionmaker[Session], pg_database: str) -> Iterator[str]:
    role = f"pt_worker_{uuid.uuid4().hex[:8]}"
    url = make_url(pg_database)
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        for statement in GRANTS.format(db=url.database, role=role).strip().splitlines():
            conn.execute(text(statement))
    try:
        yield url.set(username=role, password=None).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_a_worker_role_without_ddl_or_delete_tracks_videos_to_the_end(worker_url: str) -> None:
    with Simulator(token="tok") as sim:
        rt = Runtime(
            load(
                {
                    "DATABASE_URL": worker_url,
                    "USEAPI_TOKEN": "tok",
                    "USEAPI_BASE_URL": sim.base_url,
                    "TRACKER_FIRST_POLL_DELAY": "0",
                    "TRACKER_POLL_INTERVAL_MIN": "0.2",
                    "TRACKER_POLL_INTERVAL_MAX": "0.4",
                    "TRACKER_LIST_INTERVAL": "0.2",
                    "TRACKER_RATE_LIMIT": "50",
                    "TRACKER_WEBHOOK_URL": "http://127.0.0.1:9/never-called",
                }
            )
        )
        try:
            ids = [make_id("completed_0.2", 1), make_id("deleted_0", 2), make_id("errors_1_0", 3)]
            api.enqueue(ids, rt=rt)
            for _ in range(30):
                for batch in dispatch(rt):
                    poll_batch(rt, batch)
                states = {v: api.get(v, rt=rt).state for v in ids}  # type: ignore[union-attr]
                if "pending" not in states.values():
                    break
                threading.Event().wait(0.2)
            assert states == {ids[0]: "done", ids[1]: "abandoned", ids[2]: "done"}
            with rt.sessions.begin() as session:  # the outbox was written by the same role
                assert session.execute(text("SELECT count(*) FROM webhook_outbox")).scalar() == 3
        finally:
            rt.close()


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE intruder (x int)",
        "DROP TABLE video_events",
        "ALTER TABLE videos ADD COLUMN x int",
        "DELETE FROM videos",
        "TRUNCATE videos",
    ],
)
def test_the_worker_role_cannot_change_the_schema_nor_delete(
    worker_url: str, statement: str
) -> None:
    engine = create_engine(worker_url)
    try:
        with (
            pytest.raises(ProgrammingError, match="permission denied|must be owner"),
            engine.begin() as conn,
        ):
            conn.execute(text(statement))
    finally:
        engine.dispose()

"""Shared fixtures: a throwaway Postgres database per test session, migrated once."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.db.engines import make_engine, session_factory
from pixverse_tracker.db.revisions import upgrade

TESTS = Path(__file__).resolve().parent
# The marker of each tier, given by the folder its tests live in (pyproject registers them):
# `-m "not integration and not e2e"` selects what needs neither the services nor processes.
TIER_MARKERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue  # not one of ours
        marker = TIER_MARKERS.get(folder)
        if marker is not None:
            item.add_marker(marker)


# The server the tests use; CI and developer machines have a trust-auth Postgres on loopback.
PG_ADMIN_URL = os.environ.get(
    "TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _admin() -> Engine:
    # pre-ping: a fault test may restart the server between creating and dropping a database
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def pg_url_for(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


@contextmanager
def empty_database(prefix: str = "pt_test") -> Iterator[str]:
    """A brand-new, empty Postgres database of our own; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_url_for(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh database with the schema at head, shared by the session."""
    with empty_database() as url:
        engine = make_engine(url, pool=False)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def pg_engine(pg_database: str) -> Iterator[Engine]:
    engine = make_engine(pg_database, pool_size=10)
    yield engine
    engine.dispose()


def reset_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE webhook_outbox, video_events, videos, poll_minutes"))
        # A fresh control row with every column at its default, whatever columns it gains.
        conn.execute(text("DELETE FROM tracker_control"))
        conn.execute(text("INSERT INTO tracker_control (id) VALUES (1)"))


@pytest.fixture
def pg(pg_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory on the test database, emptied before each test."""
    reset_tables(pg_engine)
    yield session_factory(pg_engine)

"""The composition root: one set of settings, engine, sessions and HTTP client per process.

Built lazily on first use and rebuilt after a fork, because engines and HTTP connections must
not be shared across processes (each Celery child builds its own).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection
from functools import cached_property

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.db.engines import make_engine, session_factory
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.settings import EVERYTHING, Settings, load
from pixverse_tracker.upstream.transport import UseapiClient


class Runtime:
    """Owns the connections; stores its settings now and connects on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __repr__(self) -> str:
        return f"Runtime(database={self.settings.database_url.split('@')[-1]!r})"

    @cached_property
    def engine(self) -> Engine:
        # Every poll thread may hold a connection while it applies its answer.
        size = self.settings.poll_concurrency + 2
        return make_engine(
            self.settings.database_url, pool_size=size, schema=self.settings.db_schema
        )

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.engine)

    @cached_property
    def client(self) -> UseapiClient:
        s = self.settings
        return UseapiClient(
            s.useapi_base_url,
            s.require_token(),
            connect_timeout=s.http_connect_timeout,
            read_timeout=s.http_timeout,
            max_body_bytes=s.max_body_bytes,
            session=self.http,
        )

    @cached_property
    def http(self) -> requests.Session:
        # One session shared by every poll thread of this process: its connection pool must be
        # as large as the number of requests that can be in flight at once.
        session = requests.Session()
        size = self.settings.poll_concurrency * self.settings.worker_concurrency
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    @cached_property
    def policy(self) -> Policy:
        return self.settings.policy

    def close(self) -> None:
        if "http" in self.__dict__:
            self.http.close()
        if "engine" in self.__dict__:
            self.engine.dispose()


_lock = threading.Lock()
# (process id, its runtime, the settings concerns checked so far)
_current: tuple[int, Runtime, frozenset[str]] | None = None


def get(needs: Collection[str] = EVERYTHING) -> Runtime:
    """This process's runtime, built from the environment on first use; the settings concerns
    ``needs`` names are checked (an application's API call needs only the database).

    Built here, it needs DATABASE_URL: the embedded SQLite file is for `run` and `demo`, which
    install their own runtime, never for an application or a bare `celery` worker.
    """
    global _current
    with _lock:
        if _current is None or _current[0] != os.getpid():
            settings = load(needs=needs)
            settings.require_database()
            _current = (os.getpid(), Runtime(settings), frozenset(needs))
        elif not _current[2].issuperset(needs):
            load(needs=needs)  # raises over problems in the concerns not checked yet
            _current = (_current[0], _current[1], _current[2] | frozenset(needs))
        return _current[1]


def install(runtime: Runtime) -> None:
    """Use ``runtime`` in this process (the CLI and tests build their own)."""
    global _current
    with _lock:
        _current = (os.getpid(), runtime, EVERYTHING)


def reset() -> None:
    """Forget this process's runtime, closing its connections; the next get() reads the
    environment again (tests, or an application whose settings changed)."""
    global _current
    with _lock:
        if _current is not None and _current[0] == os.getpid():
            _current[1].close()
        _current = None

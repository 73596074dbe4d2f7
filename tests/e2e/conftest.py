"""End-to-end plumbing: the real ``pixverse-tracker`` processes, Redis, Postgres, the simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from pixverse_tracker.testing import Simulator
from tests.conftest import PG_ADMIN_URL, REDIS_URL, reset_tables
from tests.e2e.private_services import PrivatePostgres, PrivateRedis, free_port

CLI = str(Path(sys.executable).with_name("pixverse-tracker"))
TOKEN = "e2e-token-7c1f9d2b-do-not-log"

# Compressed timings: the scenarios play out in seconds, not minutes.
FAST = {
    "TRACKER_DISPATCH_INTERVAL": "0.5",
    "TRACKER_FIRST_POLL_DELAY": "0.3",
    "TRACKER_POLL_INTERVAL_MIN": "0.7",
    "TRACKER_POLL_INTERVAL_MAX": "2",
    "TRACKER_LIST_INTERVAL": "0.5",
    # Ids the simulator did not create are missed by their account's list first, then polled
    # by id: a SIGKILL between the two costs a lease before a video's clock even starts.
    "TRACKER_GIVE_UP_AFTER": "45",
    "TRACKER_RATE_LIMIT": "40",
    "TRACKER_HTTP_CONNECT_TIMEOUT": "1",
    "TRACKER_HTTP_TIMEOUT": "1.5",
    "TRACKER_BATCH_SIZE": "10",
    "TRACKER_AUTH_PAUSE": "2",
    "TRACKER_RATE_LIMIT_PAUSE": "1",
    "TRACKER_RATE_RECOVERY": "5",
    "TRACKER_LOG_LEVEL": "INFO",
}


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "USEAPI_"))}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env.update(extra)
    return env


class Processes:
    """Starts tracker processes with their output in files; kills what is left at the end."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.started: list[subprocess.Popen[bytes]] = []
        self.counter = 0

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """``pixverse-tracker ARGS...``."""
        return self.start_raw([CLI, *args])

    def start_raw(self, argv: list[str]) -> subprocess.Popen[bytes]:
        self.counter += 1
        name = Path(argv[1] if argv[0] == CLI else argv[0]).name
        log = open(self.log_dir / f"{self.counter:02d}-{name}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.started:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def queue_prefix() -> Iterator[str]:
    """Queues of our own: another test run on this machine may share the Redis database."""
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield prefix
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(token=TOKEN, default_delay=3) as sim:
        yield sim


@pytest.fixture
def tracker_env(
    pg_database: str, pg_engine: Engine, queue_prefix: str, simulator: Simulator
) -> dict[str, str]:
    reset_tables(pg_engine)
    # The usual postgresql:// form on purpose: the tracker must map it to psycopg2 itself.
    url = pg_database.replace("postgresql+psycopg2://", "postgresql://")
    return base_env(
        USEAPI_TOKEN=TOKEN,
        USEAPI_BASE_URL=simulator.base_url,
        DATABASE_URL=url,
        CELERY_BROKER_URL=REDIS_URL,
        TRACKER_QUEUE_PREFIX=queue_prefix,
        TRACKER_METRICS_PORT=str(free_port()),
        TRACKER_BEAT_METRICS_PORT=str(free_port()),
        **FAST,
    )


@pytest.fixture
def processes(tmp_path: Path, tracker_env: dict[str, str]) -> Iterator[Processes]:
    procs = Processes(tmp_path, tracker_env)
    yield procs
    procs.stop_all()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own, which it may kill and restart (private_services.py)."""
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of this test's own, which it may kill and restart."""
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _machine_services() -> tuple[object, object]:
    """What changes if the machine's Redis or PostgreSQL is restarted: their start identities."""
    with redis.Redis.from_url(REDIS_URL) as client:
        run_id = client.info("server")["run_id"]
    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            started = conn.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()
    finally:
        engine.dispose()
    return run_id, started


@pytest.fixture(autouse=True)
def _machine_services_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """A disruptive test kills servers of its own only: the machine's Redis and PostgreSQL,
    which other users and test runs share, are neither restarted nor flushed (issue 11)."""
    if request.node.get_closest_marker("disruptive") is None:
        yield
        return
    canary = f"tracker-test-canary-{uuid.uuid4().hex}"
    with redis.Redis.from_url(REDIS_URL) as client:
        client.set(canary, "1", ex=3600)
    before = _machine_services()
    yield
    assert _machine_services() == before, "the machine's Redis or PostgreSQL was restarted"
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.get(canary) == b"1", "the machine's Redis was flushed"
        client.delete(canary)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def pending_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM videos WHERE state = 'pending'")).scalar_one()
        )

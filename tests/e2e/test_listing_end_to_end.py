"""Real processes reading accounts' lists: enqueue (CLI) -> beat -> worker -> list reads -> Postgres."""

from __future__ import annotations

import signal
import time

from sqlalchemy import Engine, text

from pixverse_tracker.testing import Processes, Simulator
from tests.e2e import scenarios
from tests.e2e.conftest import TOKEN, pending_count, wait_until

ACCOUNTS = ("studio@example.com", "team+b@example.com", "Solo@Example.com")


def account_ids() -> dict[str, tuple[str, str | None]]:
    """12 videos each for two accounts and one for a third, all COMPLETED in the end."""
    ids: dict[str, tuple[str, str | None]] = {}
    for a, account in enumerate(ACCOUNTS):
        for n in range(1 if a == 2 else 12):
            ids[f"user:7-pixverse:{account}-video:{1000 * (a + 1) + n}"] = ("done", "COMPLETED")
    return ids


def test_accounts_are_read_through_their_lists_and_survive_a_worker_sigkill(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    population = account_ids()
    for n, video_id in enumerate(population):
        # queued for 1-3 s, then generating: finishing 4 to 9 s after creation
        simulator.script(video_id, f"queued_{1 + n % 3}_{4 + n % 6}")
    simulator.create_many(population)
    enqueued = scenarios.enqueue(tracker_env, population)
    assert enqueued.returncode == 0, enqueued.stderr

    processes.start("beat")
    worker = processes.start("worker")
    assert wait_until(lambda: len(simulator.list_requests()) >= 4, timeout=30), processes.logs()
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    time.sleep(1.0)
    processes.start("worker")

    assert wait_until(lambda: pending_count(pg_engine) == 0, timeout=90), processes.logs()[-5000:]
    scenarios.assert_all_right(pg_engine, population)

    # every record came from the lists (whole records): nothing was fetched by id
    assert [r for r in simulator.requests if r.kind == "video"] == []
    lists = simulator.list_requests()
    assert {r.email for r in lists} == set(ACCOUNTS)  # as written in the ids, case kept
    assert all(r.status == 200 for r in lists)
    # far fewer requests than videos looked at: 25 videos over ~10 s of generation would take
    # 25 polls every interval by id; here each read answers for a whole account
    assert len(lists) < 4 * len(population), len(lists)
    with pg_engine.connect() as conn:
        started = conn.execute(
            text("SELECT count(*) FROM videos WHERE started_at IS NOT NULL")
        ).scalar_one()
    assert started >= len(population) // 2  # GENERATING was seen on the list on the way
    assert TOKEN not in processes.logs()

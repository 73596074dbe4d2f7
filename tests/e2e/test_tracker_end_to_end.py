"""The whole path with real processes: enqueue (CLI) -> beat -> worker -> simulator -> Postgres."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import requests
from sqlalchemy import Engine, text

from tests.e2e.conftest import CLI, TOKEN, Processes, pending_count, wait_until
from worker.simulator import Simulator, make_id

pytestmark = pytest.mark.e2e

# scenario tag -> (expected state, expected status name, or the abandon reason's prefix)
EXPECTED = {
    "completed_{d}": ("done", "COMPLETED"),
    "generating_1_{d}": ("done", "COMPLETED"),
    "failed_{d}": ("done", "FAILED"),
    "moderated_{d}": ("done", "MODERATED"),
    "deleted_{d}": ("abandoned", "deleted"),
    "rejected": ("abandoned", "rejected"),
    "ratelimit_2_{d}": ("done", "COMPLETED"),
    "retryafter_1_1_{d}": ("done", "COMPLETED"),
    "errors_3_{d}": ("done", "COMPLETED"),
    "slow_1_3_{d}": ("done", "COMPLETED"),
    "garbage_5_{d}": ("done", "COMPLETED"),
    "queuedfinal_1_{d}": ("done", "COMPLETED"),
    "nourl_1_{d}": ("done", "COMPLETED"),
    "unknown_1_{d}": ("done", "COMPLETED"),
    "never": ("abandoned", "expired"),
}
DELAYS = (2, 4, 6, 9)


def _population() -> dict[str, tuple[str, str]]:
    ids: dict[str, tuple[str, str]] = {}
    n = 0
    for template, expected in EXPECTED.items():
        variants = {template.format(d=d) for d in DELAYS}
        for tag in sorted(variants):
            n += 1
            ids[make_id(tag, n, user=7)] = expected
    return ids


def _enqueue(env: dict[str, str], video_ids: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "enqueue", "-"],
        input="\n".join(video_ids) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_id_reaches_its_end_state_exactly_once_despite_a_worker_sigkill(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    population = _population()
    assert len(population) >= 50
    enqueued = _enqueue(tracker_env, list(population))
    assert enqueued.returncode == 0, enqueued.stderr
    assert f"enqueued {len(population)} new" in enqueued.stdout

    processes.start("beat")
    worker = processes.start("worker")

    # Let it get going, then kill the worker without warning while it holds claims.
    assert wait_until(lambda: len(simulator.requests) >= 40, timeout=30), processes.logs()
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    killed_at = time.monotonic()
    time.sleep(1.0)
    processes.start("worker")

    finished = wait_until(lambda: pending_count(pg_engine) == 0, timeout=120)
    elapsed_after_kill = time.monotonic() - killed_at
    assert finished, f"still pending after {elapsed_after_kill:.0f}s\n" + processes.logs()[-5000:]

    with pg_engine.connect() as conn:
        rows = {
            r.video_id: r
            for r in conn.execute(
                text("SELECT video_id, state, status_name, abandon_reason, done_at FROM videos")
            )
        }
        done_events = dict(
            conn.execute(
                text(
                    "SELECT video_id, count(*) FROM video_events WHERE kind = 'done' "
                    "GROUP BY video_id"
                )
            ).all()
        )
        abandoned_events = dict(
            conn.execute(
                text(
                    "SELECT video_id, count(*) FROM video_events WHERE kind = 'abandoned' "
                    "GROUP BY video_id"
                )
            ).all()
        )
    assert set(rows) == set(population), "an id was lost or invented"
    wrong = []
    for video_id, (state, detail) in population.items():
        row = rows[video_id]
        got = row.status_name if state == "done" else (row.abandon_reason or "")
        if row.state != state or not got.startswith(detail):
            wrong.append((video_id, row.state, got))
    if wrong:
        with pg_engine.connect() as conn:
            history = conn.execute(
                text(
                    "SELECT video_id, at, kind, http_status, message FROM video_events "
                    "WHERE video_id = ANY(:ids) ORDER BY id"
                ),
                {"ids": [w[0] for w in wrong]},
            ).all()
        pytest.fail(f"wrong end states: {wrong}\nhistory: {history}\n" + processes.logs()[-8000:])
    # exactly once: one 'done' event per done row, one 'abandoned' event per abandoned row
    assert all(done_events.get(v) == 1 for v, (s, _) in population.items() if s == "done")
    assert all(abandoned_events.get(v) == 1 for v, (s, _) in population.items() if s == "abandoned")
    assert not set(done_events) & set(abandoned_events)
    # the lease is the fencing: never two requests in flight for one id
    assert simulator.overlapping_requests() == 0
    # the token never reaches the logs
    assert TOKEN not in processes.logs()
    # metrics: the worker counted its polls, the beat reads the table
    worker_metrics = requests.get(
        f"http://127.0.0.1:{tracker_env['TRACKER_METRICS_PORT']}/metrics", timeout=5
    ).text
    polls = _metric(worker_metrics, 'tracker_polls_total{outcome="record"}')
    assert polls >= 1
    beat_metrics = requests.get(
        f"http://127.0.0.1:{tracker_env['TRACKER_BEAT_METRICS_PORT']}/metrics", timeout=5
    ).text
    assert _metric(beat_metrics, "tracker_pending") == 0
    assert _metric(beat_metrics, "tracker_done") == sum(
        1 for s, _ in population.values() if s == "done"
    )


def _metric(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics:\n{exposition[:2000]}")


def test_worker_refuses_to_start_without_a_token(tracker_env: dict[str, str]) -> None:
    env = {k: v for k, v in tracker_env.items() if k != "USEAPI_TOKEN"}
    result = subprocess.run([CLI, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "USEAPI_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr

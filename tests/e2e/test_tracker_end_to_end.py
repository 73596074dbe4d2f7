"""The whole path with real processes: enqueue (CLI) -> beat -> worker -> simulator -> Postgres."""

from __future__ import annotations

import signal
import subprocess
import time

import requests
from sqlalchemy import Engine

from pixverse_tracker.testing import CLI, Processes, Simulator
from tests.e2e import scenarios
from tests.e2e.conftest import TOKEN, pending_count, wait_until


def test_every_id_reaches_its_end_state_exactly_once_despite_a_worker_sigkill(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    population = scenarios.population()
    assert len(population) >= 50
    enqueued = scenarios.enqueue(tracker_env, population)
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

    scenarios.assert_all_right(pg_engine, population)
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
    done = sum(1 for s, _ in population.values() if s == "done")
    assert _metric(beat_metrics, 'tracker_videos{state="pending"}') == 0
    assert _metric(beat_metrics, 'tracker_videos{state="done"}') == done
    # the restarted worker counted the ids it finished (the killed one took its count along)
    assert 0 < _metric(worker_metrics, 'tracker_videos_finished_total{state="done"}') <= done


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

"""Fault injection with real processes: every id still ends right, exactly once.

Each test starts real `pixverse-tracker worker` / `beat` processes against the simulator,
Redis and a throwaway Postgres database, breaks something on purpose, and checks the table.
The figures they print (`-s`) are what docs/reliability.md reports.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.db.revisions import upgrade
from pixverse_tracker.settings import load
from pixverse_tracker.testing import Processes, Simulator, make_id
from tests.e2e import scenarios
from tests.e2e.conftest import TOKEN, pending_count, wait_until
from tests.e2e.private_services import PrivatePostgres, PrivateRedis

# Scenarios that end right whatever the upstream does in between (no give-up in the test).
QUICK = [t for t in scenarios.EXPECTED if t != "never"]


def _run_to_the_end(processes: Processes, engine: Engine, timeout: float = 150) -> None:
    finished = wait_until(lambda: pending_count(engine) == 0, timeout=timeout)
    assert finished, "still pending:\n" + processes.logs()[-6000:]


# time.time() - time.monotonic(): maps the simulator's monotonic log onto wall-clock time
# (the database runs on this machine, so its clock is this clock).
EPOCH = time.time() - time.monotonic()


def _report(
    name: str,
    population: dict[str, object],
    simulator: Simulator,
    outcome: scenarios.Outcome | None = None,
    **extra: object,
) -> None:
    """One line of figures for docs/reliability.md (shown with -s)."""
    requests_ = simulator.requests
    figures: dict[str, object] = {
        "ids": len(population),
        "requests": len(requests_),
        "requests/id": f"{len(requests_) / max(1, len(population)):.1f}",
        "overlaps": simulator.overlapping_requests(),
    }
    if outcome is not None:
        # a request for an id that had already finished could not change anything: wasted
        # (0.5 s of slack: event times are database time carried on a monotonic clock)
        wasted = sum(
            1
            for r in requests_
            if r.video_id in outcome.finished_at
            and EPOCH + r.started > outcome.finished_at[r.video_id] + 0.5
        )
        figures.update(
            ending_right=len(population) - len(outcome.wrong) - len(outcome.lost_or_invented),
            done_twice=len(outcome.done_twice),
            regressions=len(outcome.regressions),
            wasted=wasted,
        )
    figures.update(extra)
    print(f"\n[fault] {name}: " + " ".join(f"{k}={v}" for k, v in figures.items()))


def test_several_sigkills_in_one_run_lose_nothing(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    population = scenarios.population(QUICK, delays=(3, 6, 10))
    assert scenarios.enqueue(tracker_env, population).returncode == 0
    processes.start("beat")
    worker = processes.start("worker")
    for kill in range(3):
        target = 20 * (kill + 1)
        assert wait_until(lambda t=target: len(simulator.requests) >= t, 40), processes.logs()
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker = processes.start("worker")
    _run_to_the_end(processes, pg_engine)
    outcome = scenarios.assert_all_right(pg_engine, population)
    assert simulator.overlapping_requests() == 0
    _report("3x SIGKILL", population, simulator, outcome)


def test_sigterm_finishes_or_hands_back_its_work_and_exits_within_a_lease(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    lease = load(tracker_env).lease
    population = scenarios.population(["completed_{d}", "errors_3_{d}"], delays=(3, 5, 7, 9, 12))
    assert scenarios.enqueue(tracker_env, population).returncode == 0
    processes.start("beat")
    worker = processes.start("worker")
    assert wait_until(lambda: len(simulator.requests) >= 15, 40), processes.logs()
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(lease + 5)
    took = time.monotonic() - started
    assert took < lease, f"worker took {took:.1f}s to stop after SIGTERM (lease {lease}s)"
    assert worker.returncode == 0
    # Nothing may wait on the stopped worker's claims longer than one lease past its slot; a
    # slot is at most one dispatch interval ahead of the claim that booked it.
    settings = load(tracker_env)
    with pg_engine.connect() as conn:
        stuck = conn.execute(
            text(
                "SELECT count(*) FROM videos WHERE state = 'pending' "
                "AND claimed_until > now() + make_interval(secs => :lease)"
            ),
            {"lease": lease + settings.dispatch_interval},
        ).scalar_one()
    assert stuck == 0
    processes.start("worker")
    _run_to_the_end(processes, pg_engine)
    outcome = scenarios.assert_all_right(pg_engine, population)
    _report("SIGTERM", population, simulator, outcome, stop_seconds=f"{took:.1f}")


def _max_in_window(starts: list[float], window: float) -> int:
    best, j = 0, 0
    for i, start in enumerate(starts):
        while starts[j] < start - window + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_two_beats_and_three_workers_never_overlap_nor_exceed_the_rate(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    rate = 8
    processes.env = {
        **tracker_env,
        "TRACKER_RATE_LIMIT": str(rate),
        "TRACKER_GIVE_UP_AFTER": "600",
        # by id: the 150 ids share one account, whose list would answer for all of them in a
        # few requests a round, and this test needs more demand than the rate allows
        "TRACKER_LIST": "false",
    }
    # far more demand than the rate allows: 150 ids that never finish, polled every ~1 s
    population = {make_id("never", n, user=9): ("pending", None) for n in range(150)}
    assert scenarios.enqueue(processes.env, population).returncode == 0
    for _ in range(2):
        processes.start("beat")
    for _ in range(3):
        processes.start("worker")
    time.sleep(25)
    starts = sorted(r.started for r in simulator.requests)
    assert len(starts) > rate * 10, "the tracker was not saturated"
    steady = [t for t in starts if t >= starts[0] + 3]  # after start-up
    per_second = _max_in_window(steady, 1.0)
    per_ten = _max_in_window(steady, 10.0)
    assert simulator.overlapping_requests() == 0
    # Slots are 1/rate apart, so a closed window of 1 s holds rate + 1 of them and 10 s hold
    # rate * 10 + 1. On top of that, by design (service/claim.py, the end of claim_due), a
    # request due late in its claim's interval fires at its own time while the slots after the
    # first free one go to requests learned meanwhile, so two requests may meet once: one more
    # in a window (seen in 3 of 10 runs: 10 in 1 s, that pair 10 ms apart). A slot booked
    # twice in every second would still show as 90 in 10 s.
    assert per_second <= rate + 2, f"{per_second} requests in one second (limit {rate}/s)"
    assert per_ten <= rate * 10 + 2, f"{per_ten} requests in ten seconds (limit {rate}/s)"
    assert all(p.poll() is None for p in processes.started), processes.logs()[-4000:]
    _report("2 beats + 3 workers", population, simulator, max_1s=per_second, max_10s=per_ten)


def test_a_misbehaving_upstream_and_a_revoked_token_penalise_nobody(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    templates = ["hostile_5_{d}", "garbage_5_{d}", "errors_3_{d}", "ratelimit_2_{d}",
                 "retryafter_1_1_{d}", "slow_1_3_{d}", "completed_{d}"]  # fmt: skip
    population = scenarios.population(templates, delays=(4, 8, 12))
    # a long give-up: this test is about penalties, and 429s plus the outage slow everything
    processes.env = {**tracker_env, "TRACKER_GIVE_UP_AFTER": "150"}
    assert scenarios.enqueue(processes.env, population).returncode == 0
    processes.start("beat")
    processes.start("worker")
    assert wait_until(lambda: len(simulator.requests) >= 20, 40), processes.logs()
    simulator.unauthorized_for(8)  # "a minute", compressed like every other timing here
    time.sleep(2)
    with pg_engine.connect() as conn:
        failing = conn.execute(text("SELECT auth_failing FROM tracker_control")).scalar_one()
    assert failing, "a 401 did not pause polling"
    _run_to_the_end(processes, pg_engine)
    outcome = scenarios.assert_all_right(pg_engine, population)
    with pg_engine.connect() as conn:
        plain = conn.execute(
            text(
                "SELECT max(error_count) FROM videos "
                "WHERE video_id LIKE '%sim+completed%' OR video_id LIKE '%sim+ratelimit%'"
            )
        ).scalar_one()
        failing = conn.execute(text("SELECT auth_failing FROM tracker_control")).scalar_one()
    assert plain == 0, "401s or 429s were counted against rows"
    assert not failing, "polling did not resume by itself once the token worked"
    assert all(p.poll() is None for p in processes.started), "a process died"
    _report("hostile upstream + 401", population, simulator, outcome)


def test_a_worker_whose_clock_is_ten_minutes_off_changes_nothing(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator,
    tmp_path: Path,
) -> None:  # fmt: skip
    skew = tmp_path / "skew"
    skew.mkdir()
    (skew / "sitecustomize.py").write_text(
        "import time\n_real = time.time\ntime.time = lambda: _real() + 600\n"
    )
    population = scenarios.population(["completed_{d}", "generating_1_{d}", "failed_{d}"])
    assert scenarios.enqueue(tracker_env, population).returncode == 0
    processes.start("beat")
    processes.env = {**tracker_env, "PYTHONPATH": str(skew)}
    processes.start("worker")
    _run_to_the_end(processes, pg_engine, timeout=90)
    outcome = scenarios.assert_all_right(pg_engine, population)
    with pg_engine.connect() as conn:
        off = conn.execute(
            text("SELECT max(abs(extract(epoch FROM (updated_at - now())))) FROM videos")
        ).scalar_one()
    assert off < 120, "timestamps came from the skewed worker clock, not the database"
    _report("worker clock +10 min", population, simulator, outcome)


@pytest.mark.disruptive
def test_postgres_restarts_and_killed_backends_are_survived(
    processes: Processes, tracker_env: dict[str, str], simulator: Simulator,
    private_postgres: PrivatePostgres,
) -> None:  # fmt: skip
    # The tracker's database lives on a PostgreSQL of the test's own: it is the one restarted.
    url = private_postgres.create_database("tracker")
    engine = make_engine(url, pool=False)
    upgrade(engine)
    processes.env = {**tracker_env, "DATABASE_URL": url}
    population = scenarios.population(QUICK, delays=(4, 8, 12))
    assert scenarios.enqueue(processes.env, population).returncode == 0
    processes.start("beat")
    processes.start("worker")
    admin = create_engine(private_postgres.url(), isolation_level="AUTOCOMMIT")
    killed = 0
    try:
        for round_ in range(3):
            assert wait_until(lambda r=round_: len(simulator.requests) >= 15 * (r + 1), 40)
            with admin.connect() as conn:
                killed += conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = 'tracker' AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
        admin.dispose()
        engine.dispose()
        private_postgres.restart()
        _run_to_the_end(processes, engine)
        outcome = scenarios.assert_all_right(engine, population)
    finally:
        admin.dispose()
        engine.dispose()
    assert all(p.poll() is None for p in processes.started), "a process died"
    _report(
        "Postgres restart + pg_terminate_backend",
        population,
        simulator,
        outcome,
        backends_killed=killed,
    )


@pytest.mark.disruptive
def test_a_redis_restart_loses_messages_but_no_id(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator,
    private_redis: PrivateRedis,
) -> None:  # fmt: skip
    # The broker is a Redis of the test's own: it is the one killed and started again.
    processes.env = {**tracker_env, "CELERY_BROKER_URL": private_redis.url}
    population = scenarios.population(QUICK, delays=(4, 8, 12))
    assert scenarios.enqueue(processes.env, population).returncode == 0
    processes.start("beat")
    processes.start("worker")
    assert wait_until(lambda: len(simulator.requests) >= 20, 40), processes.logs()
    private_redis.stop()  # nothing saved: the messages in flight are lost
    time.sleep(2)
    private_redis.start()
    _run_to_the_end(processes, pg_engine)
    outcome = scenarios.assert_all_right(pg_engine, population)
    assert all(p.poll() is None for p in processes.started), "a process died"
    _report("Redis restart", population, simulator, outcome)


def test_the_token_appears_nowhere_even_at_debug_level(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    processes.env = {**tracker_env, "TRACKER_LOG_LEVEL": "DEBUG"}
    population = scenarios.population(
        ["completed_{d}", "errors_3_{d}", "garbage_5_{d}"], delays=(2,)
    )
    assert scenarios.enqueue(processes.env, population).returncode == 0
    processes.start("beat")
    processes.start("worker")
    simulator.unauthorized_for(1)  # 401s, whose bodies and logs must not carry it either
    _run_to_the_end(processes, pg_engine, timeout=90)
    outputs = [processes.logs()]
    for args in (["status"], ["status", "--json"], ["list", "--json"], ["health"]):
        result = subprocess.run(
            [scenarios.CLI, *args], env=processes.env, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        outputs.append(result.stdout + result.stderr)
    with pg_engine.connect() as conn:
        dump = conn.execute(
            text(
                "SELECT string_agg(t::text, ' ') FROM ("
                " SELECT v::text AS t FROM videos v UNION ALL"
                " SELECT e::text FROM video_events e UNION ALL"
                " SELECT c::text FROM tracker_control c) AS everything"
            )
        ).scalar_one()
    assert "DEBUG" in outputs[0], "the run did not log at DEBUG"
    for text_ in [*outputs, dump]:
        assert TOKEN not in text_


def test_a_load_of_thousands_of_pending_ids_drains_completely_once_each(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    """The CI-sized load run; bench/scale.py does 100,000 and more with memory figures."""
    processes.env = {
        **tracker_env,
        "TRACKER_RATE_LIMIT": "120",
        "TRACKER_BATCH_SIZE": "40",
        "TRACKER_POLL_CONCURRENCY": "16",
        "TRACKER_GIVE_UP_AFTER": "300",
    }
    population = {make_id("completed_0.5", n, user=11): ("done", "COMPLETED") for n in range(2500)}
    assert scenarios.enqueue(processes.env, population).returncode == 0
    processes.start("beat")
    processes.start("worker")
    _run_to_the_end(processes, pg_engine, timeout=240)
    outcome = scenarios.assert_all_right(pg_engine, population)
    assert simulator.overlapping_requests() == 0
    _report("2,500 pending ids", population, simulator, outcome)

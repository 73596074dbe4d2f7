"""Slow application endpoints against the real worker and beat: polling goes on, nothing twice.

The attack of issue 11 (item 1): an endpoint that answers one byte at a time held a delivery
for minutes; deliveries took every worker thread, no poll ran, and deliveries whose lease ran
out were sent again while the first POST was still open. The figures this prints (`-s`) are
what docs/reliability.md reports.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections import defaultdict

from sqlalchemy import Engine, text

from pixverse_tracker.testing import CLI, Processes, Simulator, make_id
from tests.e2e.conftest import pending_count, wait_until
from tests.endpoints import DripEndpoint

DEADLINE = 2.0


def _enqueue(env: dict[str, str], ids: list[str], *extra: str) -> None:
    done = subprocess.run(
        [CLI, "enqueue", *extra, *ids], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_slow_webhook_endpoints_neither_stop_polling_nor_get_a_delivery_sent_twice(
    processes: Processes, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    endpoint = DripEndpoint(gap=0.3, limit=90.0)
    processes.env = {
        **tracker_env,
        "TRACKER_WEBHOOK_SECRET": "e2e-webhook-secret",
        # The endpoint listens on loopback, which the default refuses.
        "TRACKER_WEBHOOK_ALLOW_PRIVATE": "true",
        # A short deadline, so that many rounds of slow POSTs (and retries) fit in the test;
        # the default deadline is tested in tests/integration/test_webhooks.py.
        "TRACKER_WEBHOOK_TIMEOUT": str(DEADLINE),
        # Two Celery threads instead of four: before deliveries had their own senders, slow
        # POSTs took every Celery thread one lease after another; with two that happens
        # within the test's time.
        "TRACKER_WORKER_CONCURRENCY": "2",
    }
    hooked = [make_id("completed_0", n, user=31) for n in range(1, 13)]
    later = [make_id("completed_20", n, user=32) for n in range(1, 6)]
    try:
        _enqueue(processes.env, hooked, "--webhook-url", endpoint.url)
        _enqueue(processes.env, later)
        started = time.monotonic()
        processes.start("beat")
        processes.start("worker")
        # The ids that finish after 20 s must be polled all along, while every delivery is
        # being held by the endpoint as long as the tracker lets it.
        finished = wait_until(lambda: pending_count(pg_engine) == 0, timeout=60)
        took = time.monotonic() - started
        assert finished, "polling stopped:\n" + processes.logs()[-6000:]
        assert wait_until(lambda: len({v.key for v in endpoint.visits}) == len(hooked), 30)
        time.sleep(DEADLINE + 1)
        processes.stop_all()
    finally:
        endpoint.close()

    with pg_engine.connect() as conn:
        attempts = dict(
            conn.execute(text("SELECT idempotency_key, attempts FROM webhook_outbox")).all()
        )
        errors = {e for (e,) in conn.execute(text("SELECT last_error FROM webhook_outbox"))}
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for visit in endpoint.visits:
        by_key[visit.key].append((visit.started, visit.ended or time.monotonic()))
    longest = max(end - start for spans in by_key.values() for start, end in spans)
    # Each POST was cut off at its deadline (plus one drip: the cut is noticed between bytes).
    assert longest < DEADLINE + 1.0, f"a POST lasted {longest:.1f}s"
    # Never sent twice: no delivery was open twice at once, and every POST the endpoint saw
    # was one attempt the tracker recorded (the last one may have been cut by the stop).
    for key, spans in by_key.items():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), key
        assert attempts[key] <= len(spans) <= attempts[key] + 1, (key, spans, attempts[key])
    assert errors == {f"no answer within the {DEADLINE:g}s deadline"}
    print(
        f"\n[fault] slow webhook endpoints: deliveries={len(hooked)} posts={len(endpoint.visits)} "
        f"longest_post={longest:.1f}s later_ids_done_in={took:.1f}s "
        f"overlaps=0 polled_ids={len(later)}"
    )

"""The latency contract on the production defaults, with real processes: a SIGKILLed worker
delays its ids by at most about one dispatch interval, one HTTP timeout and the poll cap, and a
claim whose poll message was never published costs no more than its lease.

Every other e2e test compresses the timings (tests/e2e/conftest.FAST) to play scenarios in
seconds; these two run on the defaults, in real time, because what they measure is the
defaults: the 15 s cap, the 5 s dispatch interval, the 30 s lease after a request's slot.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from sqlalchemy import Engine, text

from pixverse_tracker import api
from pixverse_tracker.service.dispatch import dispatch
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import Settings, load
from pixverse_tracker.testing import Processes, Simulator
from tests.e2e.conftest import pending_count, wait_until

# Only what the processes need to find each other: every timing is the tracker's default.
CONNECTIONS = (
    "USEAPI_TOKEN",
    "USEAPI_BASE_URL",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "TRACKER_QUEUE_PREFIX",
    "TRACKER_METRICS_PORT",
    "TRACKER_BEAT_METRICS_PORT",
    "TRACKER_LOG_LEVEL",
)
# A video may be finished from this long after it was created (the default first look).
PLAUSIBLE_AFTER = 15.0


def production(tracker_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in tracker_env.items() if not k.startswith("TRACKER_")}
    env.update({k: v for k, v in tracker_env.items() if k in CONNECTIONS})
    return env


def vid(account: int, n: int) -> str:
    return f"user:1-pixverse:team{account}@example.com-video:{n}"


def play(sim: Simulator, durations: dict[str, int], *, scheduled: bool) -> None:
    """Videos as useapi.net has them right after their creation, each finishing on time."""
    for video_id, seconds in durations.items():
        sim.script(video_id, f"completed_{seconds}")
    sim.create_many(durations, scheduled=scheduled)


def looks(sim: Simulator, video_id: str) -> list[float]:
    """Monotonic times at which the tracker looked at ``video_id``: a request for it by id, a
    list read of its account, a scheduler answer listing it."""
    email = video_id.split("-pixverse:", 1)[1].rsplit("-video:", 1)[0]
    offset = time.time() - time.monotonic()
    times = [r.started for r in sim.requests_for(video_id)]
    times += [r.started for r in sim.list_requests(email) if r.status == 200]
    times += [r.at - offset for r in sim.scheduler_requests() if video_id in r.ids]
    return sorted(times)


def longest_waits(sim: Simulator, durations: dict[str, int]) -> dict[str, float]:
    """Per id: the longest time without a look, from when it may be finished to its finish."""
    waits = {}
    for video_id, seconds in durations.items():
        finished = sim.completed_at(video_id)
        assert finished is not None
        created = finished - seconds
        window_start = created + PLAUSIBLE_AFTER
        seen = [t for t in looks(sim, video_id) if window_start <= t <= finished]
        marks = [window_start, *seen, finished]
        waits[video_id] = max(b - a for a, b in itertools.pairwise(marks))
    return waits


def rows_of(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT * FROM videos")).mappings().all()
    return {r["video_id"]: dict(r) for r in found}


def contract_bound(settings: Settings) -> float:
    # one dispatch interval (the claim's horizon) + one request's timeouts + the cap
    return settings.dispatch_interval + settings.request_budget + settings.poll_interval_max


def test_a_sigkilled_worker_delays_its_ids_by_at_most_a_dispatch_an_http_timeout_and_the_cap(
    tmp_path_factory: object,
    tracker_env: dict[str, str],
    pg_engine: Engine,
    simulator: Simulator,
) -> None:
    env = production(tracker_env)
    settings = load(env)
    assert (settings.poll_interval_max, settings.lease) == (15.0, 30.0)  # the defaults
    # Website videos (never in the scheduler: only by-id polls and list reads look at them)
    # in five accounts, and videos started through the API in two more.
    website = {vid(a, n): 50 + 7 * n + a for a in range(5) for n in range(4)}
    through_api = {vid(10 + a, n): 45 + 6 * n for a in range(2) for n in range(5)}
    play(simulator, website, scheduled=False)
    play(simulator, through_api, scheduled=True)
    everything = {**website, **through_api}
    rt = Runtime(settings)
    try:
        assert api.enqueue(list(everything), rt=rt).ok
    finally:
        rt.close()

    log_dir = tmp_path_factory.mktemp("latency")  # type: ignore[attr-defined]
    processes = Processes(env, log_dir)
    try:
        processes.start("beat")
        first = processes.start("worker")
        # Wait until the first worker is polling (the first looks come 15 s after enqueue).
        assert wait_until(lambda: len(simulator.requests) >= 8, 60), processes.logs()
        processes.start("worker")
        time.sleep(8)  # the second worker is up and sharing the work
        killed_at = time.monotonic()
        first.kill()  # SIGKILL: its claims and prefetched messages die with it
        first.wait(10)
        assert wait_until(lambda: pending_count(pg_engine) == 0, 240), processes.logs()
    finally:
        processes.stop_all()

    got = rows_of(pg_engine)
    assert all(r["state"] == "done" and r["status_name"] == "COMPLETED" for r in got.values())
    waits = longest_waits(simulator, everything)
    bound = contract_bound(settings)
    worst = max(waits, key=waits.__getitem__)
    print(
        f"\nSIGKILL at {killed_at - min(r.started for r in simulator.requests):.0f}s into the "
        f"run: longest wait without a look {waits[worst]:.1f}s ({worst}), bound {bound:g}s; "
        f"per id: {sorted(round(w, 1) for w in waits.values())}"
    )
    assert waits[worst] <= bound + 5.0, (
        waits[worst],
        worst,
        simulator.completed_at(worst),
        [(r.kind, r.email, r.video_id, r.status, r.started) for r in simulator.requests],
    )


def test_a_claim_whose_poll_message_was_never_sent_waits_only_its_lease(
    tmp_path_factory: object, tracker_env: dict[str, str], pg_engine: Engine, simulator: Simulator
) -> None:
    env = production(tracker_env)
    settings = load(env)
    ids = [vid(20 + n, 1) for n in range(3)]
    play(simulator, dict.fromkeys(ids, 600), scheduled=False)
    rt = Runtime(settings)
    try:
        assert api.enqueue(ids, rt=rt).ok
        with pg_engine.begin() as conn:
            conn.execute(text("UPDATE videos SET next_poll_at = now()"))  # due now
        # A dispatcher killed between committing its claim and publishing the poll messages:
        # the claim is in the database, and no worker will ever hear of it.
        batches = dispatch(rt)
    finally:
        rt.close()
    assert sum(len(b.items) + len(b.lists) for b in batches) >= 1
    claimed_at = time.monotonic()
    assert len({b.token for b in batches}) == 1

    processes = Processes(env, tmp_path_factory.mktemp("gap"))  # type: ignore[attr-defined]
    try:
        processes.start("beat")
        processes.start("worker")
        # a look by id or through the account's list, whichever the claim made
        assert wait_until(lambda: all(looks(simulator, v) for v in ids), 90), processes.logs()
    finally:
        processes.stop_all()
    first_looks = {v: min(looks(simulator, v)) for v in ids}
    waited = max(first_looks.values()) - claimed_at
    print(f"\nclaim never published: first look after {waited:.1f}s (lease {settings.lease:g}s)")
    # Held for the lease after its slot (the slot is within the first dispatch interval), and
    # then looked at by the next dispatch: not sooner (the claim held), not much later.
    assert settings.lease - 1.0 <= waited <= settings.lease + settings.dispatch_interval + 3.0

"""Claiming due rows against real Postgres: the rate budget, leases, and concurrent dispatchers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.db.engines import make_engine, session_factory
from pixverse_tracker.db.sql import current_time
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.service import enqueue as service_enqueue
from pixverse_tracker.service.claim import Claim, claim_due
from pixverse_tracker.service.limiter import SLOT_LEAD, reserve_slots
from tests.policies import policy_with

DUE_NOW = policy_with(first_poll_delay=0.0)
SPACING_5_PER_S = timedelta(microseconds=200_000)


def vid(n: int) -> str:
    return f"user:1-pixverse:me@example.com-video:{n}"


def enqueue(pg: sessionmaker[Session], ids: Sequence[str], policy: Policy = DUE_NOW) -> None:
    with pg.begin() as session:
        service_enqueue.enqueue(session, list(ids), policy)


def claim_in(
    session: Session,
    *,
    rate: float = 1000.0,
    horizon: float = 1.0,
    lease: float = 60.0,
    policy: Policy = DUE_NOW,
    max_count: int = 10_000,
) -> Claim:
    return claim_due(
        session, rate_limit=rate, horizon=horizon, lease=lease, policy=policy, max_count=max_count
    )


def claim(pg: sessionmaker[Session], **kw: Any) -> Claim:
    with pg.begin() as session:
        return claim_in(session, **kw)


def ids_of(c: Claim) -> list[str]:
    return [v for v, _ in c.slots]


def sql(pg: sessionmaker[Session], statement: str, **params: Any) -> None:
    with pg.begin() as session:
        session.execute(text(statement), params)


def scalar(pg: sessionmaker[Session], statement: str, **params: Any) -> Any:
    with pg() as session:
        return session.execute(text(statement), params).scalar()


def assert_evenly_spaced(slots: list[datetime], spacing: timedelta) -> None:
    ordered = sorted(slots)
    gaps = {b - a for a, b in pairwise(ordered)}
    assert gaps <= {spacing}, gaps


# --- the rate budget ----------------------------------------------------------------------------


def test_a_claim_takes_no_more_than_the_rate_allows_over_the_horizon_with_even_slots(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(n) for n in range(30)])

    got = claim(pg, rate=5.0, horizon=2.0, lease=60.0)

    assert got.token is not None and got.reason is None
    assert len(got.slots) == 10
    slots = [at for _, at in got.slots]
    # the first slot leaves time to hand the batch to a worker (SLOT_LEAD)
    assert min(slots) == got.now + timedelta(seconds=SLOT_LEAD)
    assert_evenly_spaced(slots, SPACING_5_PER_S)
    assert len(set(slots)) == 10
    next_slot = scalar(pg, "SELECT next_slot_at FROM tracker_control")
    assert next_slot == max(slots) + SPACING_5_PER_S
    with pg() as session:
        rows = session.execute(
            text(
                "SELECT claim_token, claimed_until, next_poll_at FROM videos WHERE video_id = ANY(:ids)"
            ),
            {"ids": ids_of(got)},
        ).all()
    # each id's lease ends the lease after its own request's slot, and it is due again then
    slot_of = dict(got.slots)
    assert {tuple(r) for r in rows} == {
        (got.token, slot_of[v] + timedelta(seconds=60), slot_of[v] + timedelta(seconds=60))
        for v in ids_of(got)
    } and len(rows) == 10
    assert scalar(pg, "SELECT count(*) FROM videos WHERE claim_token IS NULL") == 20


def test_a_second_claim_right_after_continues_from_the_next_free_slot(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(n) for n in range(30)])
    first = claim(pg, rate=5.0, horizon=2.0)
    second = claim(pg, rate=5.0, horizon=2.0)

    # the first booked the whole horizon; the second only gets what time has freed since
    assert len(first.slots) == 10
    assert len(second.slots) <= 1 + (second.now - first.now) / SPACING_5_PER_S
    assert not set(ids_of(first)) & set(ids_of(second))
    assert_evenly_spaced([at for _, at in first.slots + second.slots], SPACING_5_PER_S)


def test_nothing_is_claimed_while_the_next_free_slot_is_beyond_the_horizon(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(1)])
    sql(pg, "UPDATE tracker_control SET next_slot_at = now() + interval '5 seconds'")
    got = claim(pg, rate=5.0, horizon=2.0)
    assert got.slots == [] and got.token is None
    assert scalar(pg, "SELECT claim_token FROM videos") is None


def test_the_oldest_due_rows_are_claimed_first(pg: sessionmaker[Session]) -> None:
    enqueue(pg, [vid(n) for n in range(6)])
    sql(
        pg,
        "UPDATE videos SET next_poll_at = now() - (split_part(video_id, ':', 4)::int * interval '1 minute')",
    )
    got = claim(pg, rate=5.0, horizon=0.6)
    assert sorted(ids_of(got)) == sorted([vid(5), vid(4), vid(3)])


def test_after_a_429_a_claim_is_sized_to_the_reduced_rate(pg: sessionmaker[Session]) -> None:
    enqueue(pg, [vid(n) for n in range(30)])
    sql(pg, "UPDATE tracker_control SET rate_factor = 0.5, rate_factor_at = now()")
    slow_recovery = policy_with(first_poll_delay=0.0, rate_recovery=1e9)
    got = claim(pg, rate=5.0, horizon=2.0, policy=slow_recovery)
    assert len(got.slots) == 5
    gaps = sorted(at for _, at in got.slots)
    assert all(abs((b - a).total_seconds() - 0.4) < 1e-5 for a, b in pairwise(gaps))


def test_max_count_caps_a_claim_below_the_rate_budget(pg: sessionmaker[Session]) -> None:
    enqueue(pg, [vid(n) for n in range(30)])
    assert len(claim(pg, rate=1000.0, max_count=7).slots) == 7


# --- which rows are claimable --------------------------------------------------------------------


def test_rows_not_yet_due_and_finished_rows_are_never_claimed(pg: sessionmaker[Session]) -> None:
    enqueue(pg, [vid(1), vid(2)], policy_with(first_poll_delay=300.0))
    enqueue(pg, [vid(3), vid(4), vid(5)])
    sql(pg, "UPDATE videos SET state = 'done', done_at = now() WHERE video_id = :id", id=vid(4))
    sql(pg, "UPDATE videos SET state = 'abandoned' WHERE video_id = :id", id=vid(5))

    got = claim(pg, rate=1000.0)

    assert ids_of(got) == [vid(3)]
    assert claim(pg, rate=1000.0).slots == []


def test_a_claimed_row_is_not_claimed_again_until_its_lease_runs_out(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(1)])
    first = claim(pg, lease=3.0)
    assert ids_of(first) == [vid(1)]
    # the lease runs from the id's own slot
    (slot,) = [at for _, at in first.slots]
    assert scalar(pg, "SELECT claimed_until FROM videos") == slot + timedelta(seconds=3)

    assert claim(pg, lease=3.0).slots == []

    # the lease runs out (simulated: both the due time and the lease moved into the past)
    sql(
        pg,
        "UPDATE videos SET next_poll_at = now() - interval '1 second', "
        "claimed_until = now() - interval '1 second'",
    )
    again = claim(pg, lease=3.0)
    assert ids_of(again) == [vid(1)]
    assert again.token is not None and again.token != first.token
    assert scalar(pg, "SELECT claim_token FROM videos") == again.token


def test_concurrent_dispatchers_never_claim_the_same_row(
    pg: sessionmaker[Session], pg_database: str
) -> None:
    total, workers = 2000, 4
    enqueue(pg, [vid(n) for n in range(total)])
    barrier = threading.Barrier(workers)
    claims: list[list[Claim]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def dispatcher(index: int) -> None:
        engine = make_engine(pg_database, pool=False)
        sessions = session_factory(engine)
        try:
            barrier.wait(timeout=10)
            while True:
                with sessions.begin() as session:
                    got = claim_in(session, rate=10_000.0, horizon=1.0, max_count=37)
                if not got.slots:
                    assert got.reason is None
                    return
                claims[index].append(got)
        except Exception as exc:  # noqa: BLE001 - reported below, not lost in the thread
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    every = [v for mine in claims for c in mine for v in ids_of(c)]
    counts = Counter(every)
    assert [v for v, n in counts.items() if n > 1] == []
    assert len(every) == total and set(every) == {vid(n) for n in range(total)}
    all_claims = [c for mine in claims for c in mine]
    assert len({c.token for c in all_claims}) == len(all_claims)
    # what each dispatcher was told matches what the database says it owns
    with pg() as session:
        owners = dict(session.execute(text("SELECT video_id, claim_token FROM videos")).all())
    assert all(owners[v] == c.token for c in all_claims for v in ids_of(c))
    # and no two request slots, across all dispatchers, are closer than 1/rate
    ordered = sorted(at for c in all_claims for _, at in c.slots)
    assert min(b - a for a, b in pairwise(ordered)) >= timedelta(microseconds=100)


def _wait_for_lock_waiter(pg: sessionmaker[Session], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = scalar(
            pg,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'",
        )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the second dispatcher never waited for the control row")


def _second_dispatcher(
    pg: sessionmaker[Session], out: dict[str, Any], **kw: Any
) -> threading.Thread:
    def run() -> None:
        try:
            with pg.begin() as session:
                out["claim"] = claim_in(session, **kw)
            out["claimed_until"] = scalar(
                pg,
                "SELECT min(claimed_until) FROM videos WHERE claim_token = :t",
                t=out["claim"].token,
            )
        except Exception as exc:  # noqa: BLE001 - reported by the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_dispatcher_waits_for_the_control_row_then_continues_from_the_next_free_slot(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(n) for n in range(30)])
    out: dict[str, Any] = {}
    with pg() as holder:
        first = claim_in(holder, rate=5.0, horizon=2.0)
        assert len(first.slots) == 10
        second = _second_dispatcher(pg, out, rate=5.0, horizon=2.0)
        _wait_for_lock_waiter(pg)
        time.sleep(0.3)
        assert second.is_alive() and "claim" not in out  # blocked while the first is open
        holder.commit()
    second.join(timeout=10)
    assert "error" not in out, out.get("error")
    later: Claim = out["claim"]

    assert len(later.slots) >= 1
    assert not set(ids_of(first)) & set(ids_of(later))
    first_slots = sorted(at for _, at in first.slots)
    later_slots = sorted(at for _, at in later.slots)
    assert later_slots[0] == first_slots[-1] + SPACING_5_PER_S
    assert_evenly_spaced(first_slots + later_slots, SPACING_5_PER_S)
    assert (
        scalar(pg, "SELECT next_slot_at FROM tracker_control") == later_slots[-1] + SPACING_5_PER_S
    )


def test_a_dispatcher_that_waited_for_the_control_row_dates_its_claim_from_after_the_wait(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(n) for n in range(30)])
    out: dict[str, Any] = {}
    lease = 60.0
    with pg() as holder:
        claim_in(holder, rate=1000.0, horizon=0.001, lease=lease)
        second = _second_dispatcher(pg, out, rate=1000.0, horizon=0.001, lease=lease)
        _wait_for_lock_waiter(pg)
        time.sleep(1.0)
        with pg() as clock:
            released_at = current_time(clock)
        holder.commit()
    second.join(timeout=10)
    assert "error" not in out, out.get("error")
    later: Claim = out["claim"]
    assert later.slots
    # the lock was granted after released_at, so the claim's clock and lease must start after it
    assert later.now >= released_at
    assert out["claimed_until"] >= released_at + timedelta(seconds=lease)


# --- pauses -------------------------------------------------------------------------------------


def test_nothing_is_claimed_while_polling_is_paused_for_a_rejected_token(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(n) for n in range(5)])
    sql(
        pg,
        "UPDATE tracker_control SET auth_failing = true, auth_paused_until = now() + interval '60 seconds'",
    )

    got = claim(pg, rate=1000.0)

    assert got.slots == [] and got.token is None
    assert got.reason is not None and "paused" in got.reason
    assert scalar(pg, "SELECT count(*) FROM videos WHERE claim_token IS NOT NULL") == 0
    assert scalar(pg, "SELECT last_dispatch_at FROM tracker_control") == got.now


def test_nothing_is_claimed_while_throttled_after_a_429(pg: sessionmaker[Session]) -> None:
    enqueue(pg, [vid(n) for n in range(5)])
    sql(pg, "UPDATE tracker_control SET throttled_until = now() + interval '60 seconds'")
    got = claim(pg, rate=1000.0)
    assert got.slots == [] and got.reason is not None and "throttled" in got.reason


def test_once_the_auth_pause_is_over_a_failing_token_is_probed_with_exactly_one_row(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(n) for n in range(5)])
    sql(
        pg,
        "UPDATE tracker_control SET auth_failing = true, auth_paused_until = now() - interval '1 second'",
    )

    got = claim(pg, rate=1000.0)

    assert len(got.slots) == 1 and got.reason is None
    assert scalar(pg, "SELECT count(*) FROM videos WHERE claim_token IS NOT NULL") == 1


# --- rows due later in the interval, and slots handed out meanwhile ---------------------------------


def test_a_row_due_within_the_horizon_is_claimed_now_and_fired_at_its_due_time(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(1), vid(2)])
    sql(
        pg,
        "UPDATE videos SET next_poll_at = now() + interval '3 seconds' WHERE video_id = :v",
        v=vid(2),
    )
    sql(
        pg,
        "UPDATE videos SET next_poll_at = now() + interval '30 seconds' WHERE video_id = :v",
        v=vid(1),
    )

    got = claim(pg, rate=5.0, horizon=5.0)

    assert ids_of(got) == [vid(2)]
    (slot,) = [at for _, at in got.slots]
    due = got.now + timedelta(seconds=3)
    assert abs((slot - due).total_seconds()) < 0.05  # not before it is due, nor a tick later


def test_a_request_booked_late_in_the_interval_does_not_hold_back_slots_handed_out_meanwhile(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(1)])
    sql(pg, "UPDATE videos SET next_poll_at = now() + interval '4 seconds'")
    got = claim(pg, rate=5.0, horizon=5.0)
    assert len(got.slots) == 1
    with pg.begin() as session:
        now, extra = reserve_slots(session, 2, 5.0, DUE_NOW)
    # the next page or record fetch of another batch goes out now, not after the late one
    assert len(extra) == 2 and extra[0] - now < timedelta(seconds=0.5)
    assert extra[1] - extra[0] == SPACING_5_PER_S


def test_extra_slots_follow_the_global_schedule_and_none_are_given_while_throttled(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [vid(n) for n in range(10)])
    first = claim(pg, rate=5.0, horizon=1.0)
    with pg.begin() as session:
        _, extra = reserve_slots(session, 3, 5.0, DUE_NOW)
    booked = [at for _, at in first.slots]
    assert_evenly_spaced(booked + extra, SPACING_5_PER_S)
    sql(pg, "UPDATE tracker_control SET throttled_until = now() + interval '1 minute'")
    with pg.begin() as session:
        assert reserve_slots(session, 3, 5.0, DUE_NOW)[1] == []


def test_with_the_list_on_the_ids_of_one_account_share_one_request(
    pg: sessionmaker[Session],
) -> None:
    other = "user:1-pixverse:other@example.com-video:1"
    image = "user:1-pixverse:me@example.com-image:9"
    enqueue(pg, [vid(1), vid(2), vid(3), other, image])
    listing = policy_with(first_poll_delay=0.0, list_interval=1.0)

    got = claim(pg, rate=5.0, horizon=0.6, policy=listing)  # 3 slots

    requests = sorted((r.account or "", sorted(r.ids)) for r in got.requests)
    assert requests == [
        ("", [image]),
        ("me@example.com", sorted([vid(1), vid(2), vid(3)])),
        ("other@example.com", [other]),
    ]
    assert_evenly_spaced([r.slot for r in got.requests], SPACING_5_PER_S)


def test_slots_a_shared_request_leaves_over_claim_more_rows(pg: sessionmaker[Session]) -> None:
    enqueue(pg, [vid(n) for n in range(40)])
    listing = policy_with(first_poll_delay=0.0, list_interval=1.0)
    got = claim(pg, rate=5.0, horizon=1.0, policy=listing)  # 5 slots, one account
    assert len(got.requests) == 1
    # rounds of 5, then 4 slots x 5 ids per request so far = 20, then the 15 left: all 40
    # of a burst at once, not 5 + 4 + 4 ... over many dispatches
    assert sorted(ids_of(got)) == sorted(vid(n) for n in range(40))


def test_ids_of_as_many_accounts_as_slots_claim_one_row_per_slot(
    pg: sessionmaker[Session],
) -> None:
    enqueue(pg, [f"user:1-pixverse:a{n}@example.com-video:1" for n in range(20)])
    listing = policy_with(first_poll_delay=0.0, list_interval=1.0)
    got = claim(pg, rate=5.0, horizon=1.0, policy=listing)  # 5 slots
    assert len(got.requests) == 5 and len(got.slots) == 5

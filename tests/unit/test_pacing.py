"""The per-process pacer and the late-start rule (service/pacing.py, service/scheduler_read.py)."""

from __future__ import annotations

import threading
import time

from pixverse_tracker.service import scheduler_read
from pixverse_tracker.service.pacing import PACER, Pacer, late_tolerance


def test_the_pacer_spaces_starts_and_refuses_one_it_cannot_start_in_time() -> None:
    pacer = Pacer()
    assert pacer.reserve(10.0, 0.2) == 10.0
    assert pacer.reserve(10.0, 0.2) == 10.2  # one slot later
    # a request due at 10.0 that may start at most 0.1 s late cannot go at 10.4
    assert pacer.reserve(10.0, 0.2, latest=10.1) is None
    assert pacer.reserve(10.5, 0.2, latest=10.6) == 10.5  # nothing was reserved by the refusal


def test_late_tolerance_is_half_a_slot_and_never_under_25_ms() -> None:
    assert late_tolerance(0.2) == 0.1
    assert late_tolerance(1 / 120) == 0.025


def test_a_scheduler_read_waiting_for_its_slot_does_not_hold_earlier_slots() -> None:
    """Reserving the pacer seconds ahead made every batch of the process miss its earlier
    slots, again and again (bench.latency workload b stalled)."""
    waiter = threading.Thread(target=scheduler_read._wait_for_slot, args=(0.6, 0.2))
    waiter.start()
    try:
        time.sleep(0.1)
        now = time.monotonic()
        # a batch's request due now, in the same process, meanwhile
        assert PACER.reserve(now, 0.2, latest=now + late_tolerance(0.2)) is not None
    finally:
        waiter.join(5)

"""Pacing within one process: request start times at least one slot apart across every batch
it runs, and how late after its slot a request may still start."""

from __future__ import annotations

import math
import threading

# How many times one request may miss its slot and take a new one within a batch.
MAX_RESLOTS = 3


def late_tolerance(spacing: float) -> float:
    """How late after its slot a request may still start (seconds).

    Under one slot, a late request never puts more than rate + 1 requests in any second (the
    slots are 1/rate apart); half a slot leaves room for the next one's own jitter. At high
    rates half a slot is a few milliseconds, less than a busy machine's thread wake-up, so
    25 ms is the least: a request then meets at most a few slots' worth of others.
    """
    return max(spacing / 2, 0.025)


class Pacer:
    """Hands out request start times at least ``spacing`` apart, across threads (monotonic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_free = -math.inf

    def reserve(self, not_before: float, spacing: float, latest: float = math.inf) -> float | None:
        """The start time for a request due at ``not_before``, or None (nothing reserved)
        when this process could not start it by ``latest``."""
        with self._lock:
            start = max(not_before, self._next_free)
            if start > latest:
                return None
            self._next_free = start + spacing
            return start


PACER = Pacer()  # one per process: every batch a worker runs shares it

"""Where a tracked id stands: the ``State`` of a row (the models store it; the rules decide it)."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """Where a tracked id stands. ``pending`` is the only state the tracker ever changes."""

    PENDING = "pending"  # being tracked
    DONE = "done"  # the upstream gave a final record
    ABANDONED = "abandoned"  # we stopped: deleted, rejected or expired

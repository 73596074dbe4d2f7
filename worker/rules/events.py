"""The kinds of the event log (``video_events.kind``): every kind the tracker writes, once."""

from __future__ import annotations

import enum


class EventKind(enum.StrEnum):
    """What one ``video_events`` row records. The values are the stored strings (README)."""

    ENQUEUED = "enqueued"  # tracking began (api/cli enqueue)
    RETRACKED = "retracked"  # a finished row re-armed by --retrack
    STATUS = "status"  # the upstream's status changed (a record or a list entry)
    DONE = "done"  # a final record: the row is done
    ABANDONED = "abandoned"  # deleted, rejected or expired
    ERROR = "error"  # an answer that told us nothing (5xx, timeout, bad body), or not applied
    ANOMALY = "anomaly"  # a record that contradicts itself (logged once per status change)
    HINTED = "hinted"  # a useapi.net push made the row due now
    UNSCHEDULED = "unscheduled"  # the id left the upstream's scheduler: finished or failed

"""The tracker's state in one summary (``status``, ``health``, the table gauges): the counts
from the database, and the rate the limiter allows now."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session

from pixverse_tracker.db import reports
from pixverse_tracker.db.reports import Summary
from pixverse_tracker.rules.limiter import effective_rate_factor
from pixverse_tracker.rules.policy import Policy

# Summary is offered here too: the faces read it from the service, never from db/.
__all__ = ["Summary", "summary"]


def summary(session: Session, policy: Policy) -> Summary:
    """The summary, with ``rate_factor`` as it is now (it climbs back after 429s), and
    ``overdue`` counted against the latency bound (``policy.poll_interval_max``)."""
    stored, limiter = reports.summary(session, overdue_after=policy.poll_interval_max)
    return replace(stored, rate_factor=effective_rate_factor(limiter, stored.now, policy))

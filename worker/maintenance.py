"""Operations around the poll loop: pruning old history and the health check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from worker import db, store
from worker.db import describe_error
from worker.logs import event
from worker.runtime import Runtime

log = logging.getLogger("tracker.maintenance")


def prune(rt: Runtime, older_than: float | None = None) -> tuple[int, int, int]:
    """Remove history older than ``older_than`` seconds (default TRACKER_RETENTION).

    Returns (events, poll-minute rows, delivered callbacks) removed. ``videos`` rows are
    never touched.
    """
    age = timedelta(seconds=rt.settings.retention if older_than is None else older_than)
    totals = [0, 0, 0]
    while True:
        with rt.sessions.begin() as session:
            batch = store.prune_batch(session, age)
        totals = [t + b for t, b in zip(totals, batch, strict=True)]
        if not any(batch):
            break
    events, minutes, deliveries = totals
    event(log, logging.INFO, "pruned", events=events, poll_minutes=minutes, callbacks=deliveries)
    return events, minutes, deliveries


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def health(rt: Runtime, broker_timeout: float = 5.0) -> list[Check]:
    """Database (reachable, schema current), broker (reachable), upstream auth (not failing),
    dispatch (ran lately, while ids are pending)."""
    checks: list[Check] = []
    try:
        current, head = db.current_revision(rt.engine), db.head_revision()
        if current == head:
            checks.append(Check("database", True, f"reachable, schema at {current}"))
        else:
            checks.append(Check("database", False, f"schema at {current}, needs {head}: migrate"))
        with rt.sessions.begin() as session:
            summary = store.summary(session, rt.policy)
        if summary.auth_failing:
            checks.append(Check("upstream_auth", False, f"token rejected: {summary.auth_error}"))
        else:
            checks.append(Check("upstream_auth", True, "no 401 since the last success"))
        checks.append(dispatch_check(summary, rt.settings.dispatch_interval))
    except SQLAlchemyError as exc:
        checks.append(Check("database", False, f"unreachable: {describe_error(exc)}"))
    checks.append(_broker_check(rt, broker_timeout))
    return checks


# Dispatch intervals that may pass without a dispatch, while ids are pending, before `health`
# fails: beat sends one every interval, and one late or lost tick is not an outage.
STALE_DISPATCHES = 3


def dispatch_check(summary: store.Summary, interval: float) -> Check:
    """Whether dispatch runs: with ids pending, the last one must be under STALE_DISPATCHES
    intervals old. Dispatch runs on a worker when beat sends it, so either being down fails."""
    pending = summary.counts.get("pending", 0)
    last = summary.last_dispatch_at
    age = None if last is None else (summary.now - last).total_seconds()
    if age is not None and age <= STALE_DISPATCHES * interval:
        return Check("dispatch", True, f"last dispatch {age:.0f}s ago")
    if not pending:
        return Check("dispatch", True, "nothing pending")
    since = "has never run" if age is None else f"last ran {age:.0f}s ago"
    return Check(
        "dispatch",
        False,
        f"{since} (more than {STALE_DISPATCHES} x TRACKER_DISPATCH_INTERVAL = "
        f"{STALE_DISPATCHES * interval:g}s) while {pending} ids are pending: "
        "is beat running, and a worker?",
    )


def _broker_check(rt: Runtime, timeout: float) -> Check:
    if rt.settings.embedded:
        return Check("broker", True, "in-process (embedded mode)")
    from kombu.connection import Connection

    try:
        with Connection(rt.settings.broker_url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
        return Check("broker", True, "reachable")
    except Exception as exc:  # noqa: BLE001 - any failure to connect is "unhealthy"
        return Check("broker", False, f"unreachable: {type(exc).__name__}")

"""Operations around the poll loop: pruning old history and the health check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from pixverse_tracker.db.engines import describe_error
from pixverse_tracker.db.reports import Summary, prune_batch
from pixverse_tracker.db.revisions import current_revision, head_revision
from pixverse_tracker.logs import event
from pixverse_tracker.service import status as service_status
from pixverse_tracker.service.runtime import Runtime

log = logging.getLogger("tracker.maintenance")


def prune(rt: Runtime, older_than: float | None = None) -> tuple[int, int, int]:
    """Remove history older than ``older_than`` seconds (default TRACKER_RETENTION).

    Returns (events, poll-minute rows, delivered webhooks) removed. ``videos`` rows are
    never touched.
    """
    age = timedelta(seconds=rt.settings.retention if older_than is None else older_than)
    totals = [0, 0, 0]
    while True:
        with rt.sessions.begin() as session:
            batch = prune_batch(session, age)
        totals = [t + b for t, b in zip(totals, batch, strict=True)]
        if not any(batch):
            break
    events, minutes, deliveries = totals
    event(log, logging.INFO, "pruned", events=events, poll_minutes=minutes, webhooks=deliveries)
    return events, minutes, deliveries


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def health(rt: Runtime, broker_timeout: float = 5.0) -> list[Check]:
    """Database (reachable, schema current), broker (reachable), upstream auth (not failing),
    dispatch (ran lately, while ids are due)."""
    checks: list[Check] = []
    try:
        current, head = current_revision(rt.engine), head_revision()
        if current != head:
            # Reachable, but the tables the other checks read are missing or out of date.
            problem = "not migrated" if current is None else f"schema at {current}, needs {head}"
            checks.append(Check("database", False, f"{problem}: run `pixverse-tracker migrate`"))
            checks.append(_broker_check(rt, broker_timeout))
            return checks
        checks.append(Check("database", True, f"reachable, schema at {current}"))
        with rt.sessions.begin() as session:
            summary = service_status.summary(session, rt.policy)
        if summary.auth_failing:
            checks.append(Check("upstream_auth", False, f"token rejected: {summary.auth_error}"))
        else:
            checks.append(Check("upstream_auth", True, "no 401 since the last success"))
        checks.append(dispatch_check(summary, rt.settings.dispatch_interval))
    except SQLAlchemyError as exc:
        checks.append(Check("database", False, f"unreachable: {describe_error(exc)}"))
    checks.append(_broker_check(rt, broker_timeout))
    return checks


# Dispatch intervals that may pass without a dispatch, while ids are due, before `health`
# fails: beat sends one every interval, and one late or lost tick is not an outage.
STALE_DISPATCHES = 3


def dispatch_check(summary: Summary, interval: float) -> Check:
    """Whether dispatch runs: with ids due, the last one must be under STALE_DISPATCHES
    intervals old. Dispatch runs on a worker when beat sends it, so either being down fails.

    Ids that are pending but not yet due (just enqueued, or waiting for their next look) need
    no dispatch yet: a fresh enqueue on a stack that is starting up is not an outage."""
    due = summary.due_now
    last = summary.last_dispatch_at
    age = None if last is None else (summary.now - last).total_seconds()
    if age is not None and age <= STALE_DISPATCHES * interval:
        return Check("dispatch", True, f"last dispatch {age:.0f}s ago")
    if not due:
        return Check("dispatch", True, "nothing due")
    since = "has never run" if age is None else f"last ran {age:.0f}s ago"
    return Check(
        "dispatch",
        False,
        f"{since} (more than {STALE_DISPATCHES} x TRACKER_DISPATCH_INTERVAL = "
        f"{STALE_DISPATCHES * interval:g}s) while {due} ids are due: "
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
        return Check("broker", False, _broker_problem(rt.settings.broker_url, exc))


def _broker_problem(url: str, exc: Exception) -> str:
    """Why the broker cannot be used, in words, without the URL's password."""
    if isinstance(exc, KeyError):  # kombu looks the URL's scheme up in its transports
        return (
            f"CELERY_BROKER_URL names no broker kombu knows ({urlsplit(url).scheme}://); "
            "use redis://host:6379/0 (or amqp://...)"
        )
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    password = urlsplit(url).password
    return "unreachable: " + (text.replace(password, "********") if password else text)

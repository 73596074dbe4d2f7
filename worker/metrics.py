"""Prometheus metrics: poll counters and upstream latency from workers, queue gauges from beat.

Workers count what they do as they do it. The gauges that describe the whole table (pending,
oldest pending, done per minute, rate, auth pause) are read from the database when Prometheus
scrapes, by the beat (or ``run``) process only, so N workers do not run N copies of the query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.logs import event

log = logging.getLogger("tracker.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

POLLS = Counter(
    "tracker_polls",
    "Upstream answers received, by outcome (record, not_yet, deleted, rejected, "
    "unauthorized, rate_limited, transient).",
    ["outcome"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "tracker_upstream_latency_seconds",
    "Time for one GET /v2/pixverse/videos/{id}, answer or error.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
    registry=REGISTRY,
)
CALLBACKS = Counter(
    "tracker_callbacks",
    "Completion-callback attempts, by result (delivered, retry, failed).",
    ["result"],
    registry=REGISTRY,
)

_started: set[int] = set()
_table: list[Collector] = []  # at most one: the gauges describe one table
_lock = threading.Lock()


def record_poll(outcome: str, latency: float) -> None:
    POLLS.labels(outcome=outcome).inc()
    UPSTREAM_LATENCY.observe(latency)


class TableCollector(Collector):
    """Gauges read from the database at scrape time (cached briefly against rapid scrapes)."""

    def __init__(self, read: Any, ttl: float = 5.0) -> None:
        self._read = read  # () -> dict[str, float], or raises
        self._ttl = ttl
        self._cached: tuple[float, dict[str, float]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = self._values()
        for name, help_text in GAUGES.items():
            if name in values:
                yield GaugeMetricFamily(name, help_text, value=values[name])

    def _values(self) -> dict[str, float]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._ttl:
                try:
                    values = self._read()
                    values["tracker_database_up"] = 1.0
                except Exception as exc:  # noqa: BLE001 - a scrape must never fail
                    event(log, logging.WARNING, "metrics_read_failed", error=type(exc).__name__)
                    values = {"tracker_database_up": 0.0}
                self._cached = (now, values)
            return self._cached[1]


GAUGES = {
    "tracker_database_up": "1 if the last read of the tracker tables worked.",
    "tracker_pending": "Rows in state pending.",
    "tracker_done": "Rows in state done.",
    "tracker_abandoned": "Rows in state abandoned.",
    "tracker_due": "Pending rows due for a poll now.",
    "tracker_oldest_pending_age_seconds": "Age of the oldest pending id (0 when none).",
    "tracker_done_last_minute": "Rows that became done in the last minute.",
    "tracker_rate_limit": "Current global upstream request rate (requests/s) after 429s.",
    "tracker_auth_paused": "1 while the upstream rejects the token (polling paused).",
    "tracker_callbacks_owed": "Completion callbacks not yet delivered (nor given up).",
    "tracker_overdue": "Pending ids due more than TRACKER_POLL_INTERVAL_MAX ago (bound missed).",
    "tracker_scheduler_failures": "Scheduler reads failed in a row (0: the last one worked).",
    "tracker_scheduler_executing": "Pending ids the last scheduler read listed as executing.",
}


def table_reader(rt: Any) -> Any:
    """A zero-argument function reading the table gauges through ``rt`` (a Runtime)."""
    from worker import store

    def read() -> dict[str, float]:
        with rt.sessions.begin() as session:
            s = store.summary(session, rt.policy)
            done_last_minute, owed = store.recent_counts(session)
        age = (s.now - s.oldest_pending_since).total_seconds() if s.oldest_pending_since else 0
        return {
            "tracker_pending": s.counts["pending"],
            "tracker_done": s.counts["done"],
            "tracker_abandoned": s.counts["abandoned"],
            "tracker_due": s.due_now,
            "tracker_oldest_pending_age_seconds": max(0.0, age),
            "tracker_done_last_minute": done_last_minute,
            "tracker_rate_limit": rt.settings.rate_limit * s.rate_factor,
            "tracker_auth_paused": 1.0 if s.auth_failing else 0.0,
            "tracker_callbacks_owed": owed,
            "tracker_overdue": s.overdue,
            "tracker_scheduler_failures": s.scheduler_failures,
            "tracker_scheduler_executing": s.scheduler_executing or 0,
        }

    return read


def serve(port: int, rt: Any = None) -> bool:
    """Expose /metrics on ``port`` (0: off); with ``rt``, also the table gauges.

    A port already in use is logged, not fatal: metrics must never stop the tracker.
    """
    if port == 0:
        return False
    with _lock:
        if port in _started:
            return True
        if rt is not None and not _table:
            _table.append(TableCollector(table_reader(rt)))
            REGISTRY.register(_table[0])
        try:
            start_http_server(port, registry=REGISTRY)
        except OSError as exc:
            event(log, logging.WARNING, "metrics_unavailable", port=port, error=str(exc))
            return False
        _started.add(port)
    event(log, logging.INFO, "metrics_listening", port=port)
    return True

"""Prometheus metrics: request counters and upstream latency from workers, table gauges from beat.

Workers count what they do as they do it. The gauges that describe the whole table (videos per
state, oldest pending, rate, auth pause, ...) are read from the database when Prometheus
scrapes, by the beat (or ``run``) process only, so N workers do not run N copies of the query.
Each process serves only what it produces (beat shows no empty worker histograms), plus the
process and platform collectors. Names follow the Prometheus conventions: counters end in
``_total``, units are in the name; deploy/ holds the dashboard and the alert rules built on them.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, get_args

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pixverse_tracker.logs import event
from pixverse_tracker.rules.outcomes import KIND, Listed, ListOutcome, Outcome, SchedulerOutcome

log = logging.getLogger("tracker.metrics")

# The upstream endpoints a worker calls, as the ``endpoint`` label names them, and the outcome
# kinds each can answer (a Listed outcome comes from a list page, never from a fetch by id).
OUTCOMES = {
    "video": tuple(KIND[t] for t in get_args(Outcome) if t is not Listed),
    "list": tuple(KIND[t] for t in get_args(ListOutcome)),
    "scheduler": tuple(KIND[t] for t in get_args(SchedulerOutcome)),
}
ENDPOINTS = tuple(OUTCOMES)
STATES = ("pending", "done", "abandoned")

# Worker metrics belong to no registry until a process serves them (see ``registry``).
POLLS = Counter(
    "tracker_polls_total",
    "Answers to GET /v2/pixverse/videos/{id} (one video by id), by outcome.",
    ["outcome"],
    registry=None,
)
LIST_READS = Counter(
    "tracker_list_reads_total",
    "Answers to list pages (GET /v2/pixverse/videos/?email=...), by outcome.",
    ["outcome"],
    registry=None,
)
SCHEDULER_READS = Counter(
    "tracker_scheduler_reads_total",
    "Answers to GET /v2/pixverse/scheduler/ (the jobs still executing), by outcome.",
    ["outcome"],
    registry=None,
)
UPSTREAM_LATENCY = Histogram(
    "tracker_upstream_latency_seconds",
    "Time for one upstream request, answer or error, by endpoint (video, list, scheduler).",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
    registry=None,
)
FINISHED = Counter(
    "tracker_videos_finished_total",
    "Ids this worker moved out of pending, by the state they reached (done, abandoned).",
    ["state"],
    registry=None,
)
CALLBACKS = Counter(
    "tracker_callbacks_total",
    "Webhook (completion callback) attempts, by result (delivered, retry, failed).",
    ["result"],
    registry=None,
)
_REQUESTS = {"video": POLLS, "list": LIST_READS, "scheduler": SCHEDULER_READS}
WORKER_METRICS: tuple[Collector, ...] = (
    POLLS, LIST_READS, SCHEDULER_READS, UPSTREAM_LATENCY, FINISHED, CALLBACKS
)  # fmt: skip


def _start_known_series() -> None:
    # Every known label value starts at 0, so that rate() and the alert rules see a series
    # from the first scrape, not only after the first 429.
    for endpoint, kinds in OUTCOMES.items():
        UPSTREAM_LATENCY.labels(endpoint=endpoint)
        for kind in kinds:
            _REQUESTS[endpoint].labels(outcome=kind)
    for state in ("done", "abandoned"):
        FINISHED.labels(state=state)
    for result in ("delivered", "retry", "failed"):
        CALLBACKS.labels(result=result)


_start_known_series()
_started: set[int] = set()
_lock = threading.Lock()


def record_request(endpoint: str, outcome: str, latency: float) -> None:
    """One upstream answer: ``endpoint`` is one of ENDPOINTS, ``outcome`` a kind (outcomes.KIND)."""
    _REQUESTS[endpoint].labels(outcome=outcome).inc()
    UPSTREAM_LATENCY.labels(endpoint=endpoint).observe(latency)


def record_finished(state: str) -> None:
    FINISHED.labels(state=state).inc()


Gauge = tuple[str, dict[str, str], float]  # (name, labels, value)


class TableCollector(Collector):
    """Gauges read from the database at scrape time (cached briefly against rapid scrapes)."""

    def __init__(self, read: Callable[[], list[Gauge]], ttl: float = 5.0) -> None:
        self._read = read  # () -> [(name, labels, value)], or raises
        self._ttl = ttl
        self._cached: tuple[float, list[Gauge]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, labels, value in self._values():
            if name not in families:
                families[name] = GaugeMetricFamily(name, GAUGES[name], labels=sorted(labels))
            families[name].add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()

    def _values(self) -> list[Gauge]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._ttl:
                try:
                    values = [("tracker_database_up", {}, 1.0), *self._read()]
                except Exception as exc:  # noqa: BLE001 - a scrape must never fail
                    event(log, logging.WARNING, "metrics_read_failed", error=type(exc).__name__)
                    values = [("tracker_database_up", {}, 0.0)]
                self._cached = (now, values)
            return self._cached[1]


GAUGES = {
    "tracker_database_up": "1 if the last read of the tracker tables worked.",
    "tracker_videos": "Rows in the videos table, by state (pending, done, abandoned).",
    "tracker_due": "Pending rows due for a poll now.",
    "tracker_overdue": "Pending ids due more than TRACKER_POLL_INTERVAL_MAX ago (bound missed).",
    "tracker_oldest_pending_age_seconds": "Age of the oldest pending id (0 when none).",
    "tracker_give_up_after_seconds": "TRACKER_GIVE_UP_AFTER: a pending id older is abandoned.",
    "tracker_last_dispatch_age_seconds": "Time since the last dispatch ran (database clock).",
    "tracker_rate_limit_per_second": "Current global upstream request rate after 429s.",
    "tracker_auth_paused": "1 while the upstream rejects the token (polling paused).",
    "tracker_callbacks_owed": "Webhook deliveries not yet made (nor given up).",
    "tracker_scheduler_consecutive_failures": "Scheduler reads failed in a row (0: last worked).",
    "tracker_scheduler_executing": "Pending ids the last scheduler read listed as executing.",
}


def table_reader(rt: Any) -> Callable[[], list[Gauge]]:
    """A zero-argument function reading the table gauges through ``rt`` (a Runtime)."""
    from pixverse_tracker.db.outbox import callbacks_owed
    from pixverse_tracker.service.status import summary

    def read() -> list[Gauge]:
        with rt.sessions.begin() as session:
            s = summary(session, rt.policy)
            owed = callbacks_owed(session)
        age = (s.now - s.oldest_pending_since).total_seconds() if s.oldest_pending_since else 0
        gauges: list[Gauge] = [("tracker_videos", {"state": k}, s.counts[k]) for k in STATES]
        gauges += [
            ("tracker_due", {}, s.due_now),
            ("tracker_overdue", {}, s.overdue),
            ("tracker_oldest_pending_age_seconds", {}, max(0.0, age)),
            ("tracker_give_up_after_seconds", {}, rt.settings.give_up_after),
            ("tracker_rate_limit_per_second", {}, rt.settings.rate_limit * s.rate_factor),
            ("tracker_auth_paused", {}, 1.0 if s.auth_failing else 0.0),
            ("tracker_callbacks_owed", {}, owed),
            ("tracker_scheduler_consecutive_failures", {}, s.scheduler_failures),
            ("tracker_scheduler_executing", {}, s.scheduler_executing or 0),
        ]
        if s.last_dispatch_at is not None:  # absent until the first dispatch (an alert says so)
            since = (s.now - s.last_dispatch_at).total_seconds()
            gauges.append(("tracker_last_dispatch_age_seconds", {}, max(0.0, since)))
        return gauges

    return read


def registry(
    table: Callable[[], list[Gauge]] | None = None, *, work: bool = True
) -> CollectorRegistry:
    """What one process serves: the worker metrics if it ``work``s, the table gauges if it has
    a ``table`` reader, and always the process and platform collectors."""
    served = CollectorRegistry(auto_describe=True)
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        served.register(standard)
    if work:
        for metric in WORKER_METRICS:
            served.register(metric)
    if table is not None:
        served.register(TableCollector(table))
    return served


def serve(
    port: int, rt: Any = None, *, work: bool = True, variable: str = "TRACKER_METRICS_PORT"
) -> bool:
    """Expose /metrics on ``port`` (0: off); with ``rt``, also the table gauges.

    ``variable`` names the setting the port came from, for the line logged when the port
    cannot be had: that is logged, not fatal, since metrics must never stop the tracker.
    """
    if port == 0:
        return False
    with _lock:
        if port in _started:
            return True
        served = registry(table_reader(rt) if rt is not None else None, work=work)
        try:
            start_http_server(port, registry=served)
        except OSError as exc:
            event(
                log, logging.WARNING, "metrics_unavailable", detail=unavailable(port, variable, exc)
            )
            return False
        _started.add(port)
    event(log, logging.INFO, "metrics_listening", port=port)
    return True


def unavailable(port: int, variable: str, exc: OSError) -> str:
    """The operator's line for a metrics port that could not be opened."""
    if exc.errno == errno.EADDRINUSE:
        why = "is already in use (another tracker process on this host?)"
    else:
        why = f"cannot be opened: {exc.strerror or exc}"
    return (
        f"metrics port {port} ({variable}) {why}; this process serves no /metrics. "
        f"Give each process on this host its own {variable}, or 0 to turn it off"
    )

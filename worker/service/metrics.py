"""The tracker's Prometheus metrics: request counters and upstream latency that workers count
as they work, and the table gauges read from the database when Prometheus scrapes.

Workers count what they do as they do it. The gauges that describe the whole table (videos per
state, oldest pending, rate, auth pause, ...) are read by the beat (or ``run``) process only,
so N workers do not run N copies of the query; ``web.metrics`` serves them. Names follow the
Prometheus conventions: counters end in ``_total``, units are in the name; deploy/ holds the
dashboard and the alert rules built on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

from pixverse_tracker.db.outbox import webhooks_owed
from pixverse_tracker.rules.outcomes import KIND, Listed, ListOutcome, Outcome, SchedulerOutcome
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.service.status import summary

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

WEBHOOKS = Counter(
    "tracker_webhooks_total",
    "Webhook attempts, by result (delivered, retry, failed).",
    ["result"],
    registry=None,
)

_REQUESTS = {"video": POLLS, "list": LIST_READS, "scheduler": SCHEDULER_READS}

WORKER_METRICS: tuple[Collector, ...] = (
    POLLS, LIST_READS, SCHEDULER_READS, UPSTREAM_LATENCY, FINISHED, WEBHOOKS
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
        WEBHOOKS.labels(result=result)


_start_known_series()


def record_request(endpoint: str, outcome: str, latency: float) -> None:
    """One upstream answer: ``endpoint`` is one of ENDPOINTS, ``outcome`` a kind (outcomes.KIND)."""
    _REQUESTS[endpoint].labels(outcome=outcome).inc()
    UPSTREAM_LATENCY.labels(endpoint=endpoint).observe(latency)


def record_finished(state: str) -> None:
    FINISHED.labels(state=state).inc()


Gauge = tuple[str, dict[str, str], float]  # (name, labels, value)


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
    "tracker_webhooks_owed": "Webhook deliveries not yet made (nor given up).",
    "tracker_scheduler_consecutive_failures": "Scheduler reads failed in a row (0: last worked).",
    "tracker_scheduler_executing": "Pending ids the last scheduler read listed as executing.",
}


def table_reader(rt: Runtime) -> Callable[[], list[Gauge]]:
    """A zero-argument function reading the table gauges through ``rt``."""

    def read() -> list[Gauge]:
        with rt.sessions.begin() as session:
            s = summary(session, rt.policy)
            owed = webhooks_owed(session)
        age = (s.now - s.oldest_pending_since).total_seconds() if s.oldest_pending_since else 0
        gauges: list[Gauge] = [("tracker_videos", {"state": k}, s.counts[k]) for k in STATES]
        gauges += [
            ("tracker_due", {}, s.due_now),
            ("tracker_overdue", {}, s.overdue),
            ("tracker_oldest_pending_age_seconds", {}, max(0.0, age)),
            ("tracker_give_up_after_seconds", {}, rt.settings.give_up_after),
            ("tracker_rate_limit_per_second", {}, rt.settings.rate_limit * s.rate_factor),
            ("tracker_auth_paused", {}, 1.0 if s.auth_failing else 0.0),
            ("tracker_webhooks_owed", {}, owed),
            ("tracker_scheduler_consecutive_failures", {}, s.scheduler_failures),
            ("tracker_scheduler_executing", {}, s.scheduler_executing or 0),
        ]
        if s.last_dispatch_at is not None:  # absent until the first dispatch (an alert says so)
            since = (s.now - s.last_dispatch_at).total_seconds()
            gauges.append(("tracker_last_dispatch_age_seconds", {}, max(0.0, since)))
        return gauges

    return read

"""The Celery app: its configuration, queues and beat schedule, taken from the settings.

``celery -A pixverse_tracker.jobs.app worker|beat`` works; so do
``pixverse-tracker worker|beat|run``.
The configuration is read when Celery first needs it, not at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, signals
from kombu.entity import Queue

from pixverse_tracker import logs
from pixverse_tracker.settings import Settings, SettingsError, load
from pixverse_tracker.web.metrics import serve

app = Celery("pixverse_tracker", include=["pixverse_tracker.jobs.tasks"])


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for a tracker: at-least-once tasks whose safety rests on the lease."""
    interval = settings.dispatch_interval
    # Queue names carry a prefix so several trackers (or test runs) can share one Redis.
    dispatch_queue = f"{settings.queue_prefix}.dispatch"
    poll_queue = f"{settings.queue_prefix}.poll"
    # Its own queue, so a deliver tick never waits behind poll batches (the POSTs themselves
    # run on the webhook senders' threads, see service/sender.py).
    deliver_queue = f"{settings.queue_prefix}.deliver"
    # No message carries an `expires`: Celery compares it with the receiving worker's wall
    # clock, so a worker whose clock is minutes off would drop every task. Staleness is judged
    # in database time instead: a poll batch by its claim token and lease; a backlog of
    # dispatch ticks (workers were down) drains cheaply, since the rate slots they would hand
    # out are already taken by the first.
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker outlives a broker restart
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        # Ack after the task ran; a crash mid-batch is healed by the lease, not by redelivery
        # (Redis redelivers only after its visibility timeout, an hour by default).
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        # A poll task must end before its lease does (the poll loop also stops itself in time;
        # these limits bite only in the prefork pool, where Celery can enforce them).
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": max(1.0, settings.task_time_limit - 3),
        "task_queues": (Queue(dispatch_queue), Queue(poll_queue), Queue(deliver_queue)),
        "task_default_queue": poll_queue,
        "task_routes": {
            "tracker.dispatch": {"queue": dispatch_queue},
            "tracker.prune": {"queue": dispatch_queue},
            "tracker.scheduler": {"queue": dispatch_queue},
            "tracker.poll": {"queue": poll_queue},
            "tracker.deliver": {"queue": deliver_queue},
        },
        # Beat keeps no schedule file: one fixed interval needs no persistence.
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_schedule": {
            "dispatch": {
                "task": "tracker.dispatch",
                "schedule": interval,
            },
            "deliver": {
                "task": "tracker.deliver",
                "schedule": interval,
            },
        },
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # `celery inspect` and Flower need remote control and events; they cost a pidbox
        # subscription per worker and an event per task in Redis, so one setting turns them on
        # (README, "Celery's own tools"). Their exchanges are this tracker's own, so that on a
        # shared Redis they see (and command) only its workers.
        "worker_enable_remote_control": settings.celery_control,
        "worker_send_task_events": settings.celery_control,
        "task_send_sent_event": settings.celery_control,
        "control_exchange": settings.queue_prefix,
        "event_exchange": f"{settings.queue_prefix}.events",
        "timezone": "UTC",
        "enable_utc": True,
    }
    if settings.scheduler_enabled:
        # The token-wide read of the jobs still executing (service/scheduler_read.py).
        config["beat_schedule"]["scheduler"] = {
            "task": "tracker.scheduler",
            "schedule": settings.scheduler_interval,
        }
    if settings.prune_interval > 0:
        # Off (0) when the worker's database role may not DELETE: prune from cron instead.
        config["beat_schedule"]["prune"] = {
            "task": "tracker.prune",
            "schedule": settings.prune_interval,
        }
    if settings.broker_url.startswith("memory://"):
        # The in-process broker polls its queues; the default second would delay every poll.
        config["broker_transport_options"] = {"polling_interval": 0.05}
        if not urlsplit(settings.broker_url).hostname:
            # A bare memory:// makes kombu warn "No hostname was supplied" on every start; the
            # host means nothing to the in-process transport, so name one.
            config["broker_url"] = "memory://localhost/"
    return config


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    sender.conf.update(celery_config(load()))


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Connecting here stops Celery from installing its own handlers: ours redact the token.
    settings = load()
    logs.configure(
        settings.log_level,
        secrets=[settings.useapi_token.reveal()],
        log_format=settings.log_format,
    )
    for notice in settings.notices:
        logs.event(
            logging.getLogger("tracker.settings"), logging.WARNING, "setting_ignored", detail=notice
        )


@contextmanager
def _stop_if_misconfigured() -> Iterator[None]:
    # Celery logs and swallows an exception raised by a signal handler, so a bare
    # `celery -A pixverse_tracker.jobs.app worker|beat` would run on misconfigured; SystemExit
    # gets through.
    try:
        yield
    except SettingsError as exc:
        # the lines `pixverse-tracker worker|beat` prints: one per problem
        lines = str(exc).splitlines() or [""]
        raise SystemExit("\n".join(f"pixverse-tracker: error: {line}" for line in lines)) from None


@signals.worker_init.connect
def _require_token(**_: Any) -> None:
    # `celery -A pixverse_tracker.jobs.app worker` must stop at start-up too, not poll with no
    # token, nor with no DATABASE_URL (the runtime `pixverse-tracker` installs has passed both
    # checks).
    from pixverse_tracker.service import runtime

    with _stop_if_misconfigured():
        settings = runtime.get().settings
        settings.require_token()
    serve(settings.metrics_port)  # its own counters; the table gauges come from beat


@signals.beat_init.connect
def _beat_metrics(**_: Any) -> None:
    from pixverse_tracker.service import runtime

    with _stop_if_misconfigured():
        rt = runtime.get()
    # Beat polls nothing: it serves the table gauges without the (empty) worker metrics.
    serve(rt.settings.beat_metrics_port, rt, work=False, variable="TRACKER_BEAT_METRICS_PORT")

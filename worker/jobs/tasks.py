"""The Celery tasks: thin wrappers that pass ids and call the service layer."""

from __future__ import annotations

import logging
from typing import Any

from pixverse_tracker.jobs.app import app
from pixverse_tracker.logs import event
from pixverse_tracker.service import dispatch as service_dispatch
from pixverse_tracker.service import maintenance, runtime, scheduler_read, sender
from pixverse_tracker.service.batch import poll_batch
from pixverse_tracker.service.dispatch import Batch

log = logging.getLogger("tracker.tasks")


@app.task(name="tracker.dispatch", ignore_result=True)
def dispatch() -> int:
    """Claim due ids within the global rate budget and send them out as poll batches."""
    rt = runtime.get()
    batches = service_dispatch.dispatch(rt)
    for batch in batches:
        # No `expires`: a stale message is recognised by its claim token in database time
        # (owned_rows), which a worker with a wrong clock cannot misjudge.
        poll.apply_async(args=[batch.to_message()])
    return sum(len(b.items) for b in batches)


@app.task(name="tracker.scheduler", ignore_result=True)
def scheduler() -> int:
    """Read which jobs are still executing, token-wide; dispatch at once when some finished."""
    batches = scheduler_read.read(runtime.get())
    for batch in batches:
        poll.apply_async(args=[batch.to_message()])
    return sum(len(b.items) + len(b.lists) for b in batches)


@app.task(name="tracker.prune", ignore_result=True)
def prune() -> int:
    """Remove history older than TRACKER_RETENTION (beat runs it hourly)."""
    events, _, _ = maintenance.prune(runtime.get())
    return events


@app.task(name="tracker.deliver", ignore_result=True)
def deliver() -> int:
    """Hand owed webhook deliveries to this process's webhook senders (beat runs it every
    dispatch interval). Returns at once: the POSTs run on the senders' own threads, never on a
    Celery thread that could poll."""
    return sender.start(runtime.get())


@app.task(name="tracker.poll", ignore_result=True)
def poll(message: dict[str, Any]) -> dict[str, int]:
    """Poll one batch of claimed ids."""
    report = poll_batch(runtime.get(), Batch.from_message(message))
    event(
        log,
        logging.INFO,
        "batch_done",
        polled=report.polled,
        listed=report.listed,
        applied=report.applied,
        adopted=report.adopted,
        stale=report.stale,
        released=report.released,
        reslotted=report.reslotted,
        failed_to_store=report.failed_to_store,
    )
    return {"polled": report.polled, "applied": report.applied}

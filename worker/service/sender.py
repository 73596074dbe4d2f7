"""Delivers owed webhooks: claim from the outbox, POST signed, record each result.

At least once: a delivery is marked only after its POST; a crash in between re-sends it with
the same body and ``webhook-id``.

The POSTs run on a few threads of the process's own (``TRACKER_WEBHOOK_CONCURRENCY``), never on
Celery's pool: the ``tracker.deliver`` task only claims what those threads can take at once and
hands it over, so no number of slow endpoints can hold a thread that polls. Each POST ends by
its deadline (``TRACKER_WEBHOOK_TIMEOUT``), well inside its claim's lease, and its result is
stored as soon as it is known: a live sender never sees its delivery claimed by another.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from datetime import timedelta

from pixverse_tracker.db.engines import describe_error
from pixverse_tracker.db.outbox import Delivery, claim_deliveries, delivery_result
from pixverse_tracker.logs import event
from pixverse_tracker.rules.addresses import AddressPolicy
from pixverse_tracker.rules.webhooks import (
    retry_delay,
    scrub_url,
    shown_url,
    signed_headers,
    signing_key,
)
from pixverse_tracker.service import metrics, outbound
from pixverse_tracker.service.runtime import Runtime

log = logging.getLogger("tracker.webhooks")

# A claim outlives its POST's deadline by this much: the time to start the thread before the
# POST and to store the result after it.
LEASE_MARGIN = 10.0
NO_SECRET = "TRACKER_WEBHOOK_SECRET is not set"


def lease(webhook_timeout: float) -> float:
    """How long a claimed delivery stays with its sender: longer than its POST can last."""
    return webhook_timeout + LEASE_MARGIN


class _Sender(threading.Thread):
    """One sender thread: its first delivery, then whatever else is owed, one at a time."""

    def __init__(self, deliverer: Deliverer, token: str, first: Delivery) -> None:
        super().__init__(name="webhook-sender", daemon=True)
        self.deliverer = deliverer
        self.token = token
        self.first = first
        self.delivered = 0

    def run(self) -> None:
        try:
            token, delivery = self.token, self.first
            while True:
                self.delivered += self.deliverer.deliver(token, delivery)
                token, more = self.deliverer.claim(1)
                if not more:
                    return
                delivery = more[0]
        except Exception as exc:  # noqa: BLE001 - a thread must not die silently; leases heal it
            event(log, logging.ERROR, "webhook_sender_failed", error=describe_error(exc))
        finally:
            self.deliverer.release(1)


class Deliverer:
    """The process's webhook senders: at most ``TRACKER_WEBHOOK_CONCURRENCY`` threads.

    Daemon threads: a process that exits does not wait for a slow endpoint; what it was
    sending is claimed again once its lease runs out (at least once).
    """

    def __init__(self, rt: Runtime) -> None:
        s = rt.settings
        self.rt = rt
        self.policy = AddressPolicy.from_settings(s.webhook_allow_private, s.webhook_allowlist)
        self._slots = s.webhook_concurrency
        self._busy = 0
        self._lock = threading.Lock()
        self._rng = random.SystemRandom()

    def claim(self, limit: int) -> tuple[str, list[Delivery]]:
        with self.rt.sessions.begin() as session:
            return claim_deliveries(
                session, limit=limit, lease=lease(self.rt.settings.webhook_timeout)
            )

    def release(self, slots: int) -> None:
        with self._lock:
            self._busy -= slots

    def start(self) -> list[_Sender]:
        """Claim as many owed deliveries as there are idle senders, and start sending them.

        Never more than can start at once: a claim's lease starts counting now.
        """
        with self._lock:
            free = self._slots - self._busy
            self._busy += free
        started: list[_Sender] = []
        try:
            if free > 0:
                token, deliveries = self.claim(free)
                for delivery in deliveries:
                    sender = _Sender(self, token, delivery)
                    sender.start()
                    started.append(sender)
        finally:
            self.release(free - len(started))
        return started

    def deliver(self, token: str, delivery: Delivery) -> bool:
        """POST one claimed delivery and store what came of it at once; True if delivered."""
        s = self.rt.settings
        secret = s.webhook_secret.reveal()
        if not secret:
            attempt = outbound.Attempt(False, None, NO_SECRET)
        else:
            body = delivery.body.encode()
            headers = signed_headers(
                signing_key(secret), delivery.idempotency_key, delivery.kind, body, time.time()
            )
            attempt = outbound.post(delivery.url, body, headers, self.policy, s.webhook_timeout)
        error = scrub_url(attempt.error, delivery.url) if attempt.error else None
        tries = delivery.attempts + 1
        give_up = not attempt.ok and (attempt.permanent or tries >= s.webhook_max_attempts)
        retry_at = (
            None if attempt.ok or give_up else timedelta(seconds=retry_delay(tries, self._rng))
        )
        try:
            with self.rt.sessions.begin() as session:
                delivery_result(
                    session, delivery.id, token, attempt.ok, attempt.status, error, retry_at
                )
        except Exception as exc:  # noqa: BLE001 - the lease brings it back; at-least-once
            event(
                log, logging.ERROR, "webhook_result_lost", id=delivery.id, error=describe_error(exc)
            )
            return False
        level = logging.INFO if attempt.ok else logging.WARNING
        outcome = "delivered" if attempt.ok else ("failed" if give_up else "retry")
        metrics.WEBHOOKS.labels(result=outcome).inc()
        event(
            log, level, "webhook", video_id=delivery.video_id, url=shown_url(delivery.url),
            outcome=outcome, http_status=attempt.status, attempt=tries, error=error,
        )  # fmt: skip
        return attempt.ok


_lock = threading.Lock()
# One Deliverer per runtime (and so per process): weak keys, so it goes with its runtime.
_deliverers: weakref.WeakKeyDictionary[Runtime, Deliverer] = weakref.WeakKeyDictionary()


def deliverer(rt: Runtime) -> Deliverer:
    """This runtime's webhook senders, made on first use."""
    with _lock:
        found = _deliverers.get(rt)
        if found is None:
            found = _deliverers[rt] = Deliverer(rt)
        return found


def start(rt: Runtime) -> int:
    """Hand owed deliveries to this process's idle senders; returns how many were started."""
    return len(deliverer(rt).start())


def deliver_due(rt: Runtime) -> int:
    """Deliver everything owed now and wait for it; returns how many succeeded."""
    senders = deliverer(rt).start()
    for sender in senders:
        sender.join()
    return sum(sender.delivered for sender in senders)

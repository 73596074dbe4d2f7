"""Delivers owed completion callbacks: claim from the outbox, POST signed, record the result.

At least once: a delivery is marked only after its POST; a crash in between re-sends it with
the same body, signature and idempotency key.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import requests

from worker import metrics, store
from worker.db import describe_error
from worker.logs import event
from worker.runtime import Runtime
from worker.webhooks import EVENT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, retry_delay, sign

log = logging.getLogger("tracker.webhooks")


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status: int | None
    error: str | None


def post(
    session: requests.Session, delivery: store.Delivery, secret: str, timeout: float
) -> Attempt:
    """One POST; never raises. Redirects are not followed (the body is signed for this URL)."""
    payload = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, payload),
        IDEMPOTENCY_HEADER: delivery.idempotency_key,
        EVENT_HEADER: f"video.{delivery.kind}",
        "User-Agent": "pixverse-tracker-webhooks",
    }
    try:
        response = session.post(
            delivery.url,
            data=payload,
            headers=headers,
            timeout=(5.0, timeout),
            allow_redirects=False,
            stream=True,  # we only need the status: do not download whatever comes back
        )
        response.close()
    except requests.RequestException as exc:
        return Attempt(False, None, f"{type(exc).__name__}: {str(exc)[:200]}")
    if 200 <= response.status_code < 300:
        return Attempt(True, response.status_code, None)
    return Attempt(False, response.status_code, f"HTTP {response.status_code}")


def deliver_due(rt: Runtime, limit: int = 100, concurrency: int = 4) -> int:
    """Claim owed deliveries and POST them; returns how many succeeded."""
    s = rt.settings
    lease = s.webhook_timeout + 10.0
    with rt.sessions.begin() as session:
        token, deliveries = store.claim_deliveries(session, limit=limit, lease=lease)
    if not deliveries:
        return 0
    secret = s.webhook_secret.reveal()
    rng = random.SystemRandom()
    with requests.Session() as http, ThreadPoolExecutor(concurrency) as pool:
        if not secret:
            attempts = [Attempt(False, None, "TRACKER_WEBHOOK_SECRET is not set")] * len(deliveries)
        else:
            attempts = list(
                pool.map(lambda d: post(http, d, secret, s.webhook_timeout), deliveries)
            )
    delivered = 0
    for delivery, attempt in zip(deliveries, attempts, strict=True):
        tries = delivery.attempts + 1
        give_up = not attempt.ok and tries >= s.webhook_max_attempts
        retry_at = None if attempt.ok or give_up else timedelta(seconds=retry_delay(tries, rng))
        try:
            with rt.sessions.begin() as session:
                store.delivery_result(
                    session, delivery.id, token, attempt.ok, attempt.status, attempt.error, retry_at
                )
        except Exception as exc:  # noqa: BLE001 - the lease brings it back; at-least-once
            event(
                log, logging.ERROR, "webhook_result_lost", id=delivery.id, error=describe_error(exc)
            )
            continue
        delivered += attempt.ok
        level = logging.INFO if attempt.ok else logging.WARNING
        outcome = "delivered" if attempt.ok else ("failed" if give_up else "retry")
        metrics.CALLBACKS.labels(result=outcome).inc()
        event(
            log, level, "webhook", video_id=delivery.video_id, outcome=outcome,
            http_status=attempt.status, attempt=tries, error=attempt.error,
        )  # fmt: skip
    return delivered

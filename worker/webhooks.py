"""Completion callbacks to applications ("webhooks"): URL rules, the signed body, retry timing.

Pure functions. When a row becomes done or abandoned and has a callback URL (its own, or
TRACKER_WEBHOOK_URL), ``store.apply`` writes the delivery into ``callback_outbox`` in the same
transaction; ``sender.deliver_due`` POSTs what is owed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
SIGNATURE_HEADER = "X-Pixverse-Tracker-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Pixverse-Tracker-Event"
FIRST_RETRY = 10.0  # seconds; doubles per attempt
MAX_RETRY = 3600.0


class InvalidCallbackUrl(ValueError):
    """A callback URL the tracker will not POST to."""


def validate_url(url: str) -> str:
    """http(s), a host, bounded length, no credentials or fragment; else InvalidCallbackUrl."""
    text = url.strip()
    if not text:
        raise InvalidCallbackUrl("callback URL is empty")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidCallbackUrl(f"callback URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidCallbackUrl("callback URL contains whitespace or control characters")
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise InvalidCallbackUrl(f"callback URL is malformed: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise InvalidCallbackUrl(f"callback URL must be http or https, not {parts.scheme!r}")
    if not host:
        raise InvalidCallbackUrl("callback URL has no host")
    if parts.username or parts.password:
        raise InvalidCallbackUrl("callback URL must not carry credentials (use the signature)")
    if parts.fragment:
        raise InvalidCallbackUrl("callback URL must not have a #fragment")
    return text


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the raw body with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """What a receiving application does (documented): constant-time comparison."""
    return hmac.compare_digest(sign(secret, body), signature)


def idempotency_key(video_id: str, kind: str, enqueued_at: datetime) -> str:
    """Stable for one finish of one tracking run (a --retrack starts a new run, a new key)."""
    material = f"{video_id}\n{kind}\n{enqueued_at.astimezone(UTC).isoformat()}"
    return hashlib.sha256(material.encode()).hexdigest()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def body_for(kind: str, key: str, row: Mapping[str, Any]) -> str:
    """The JSON body: the event, the key, and the row's public columns with its record."""
    video = {name: _json_value(row.get(name)) for name in PAYLOAD_COLUMNS}
    payload = {"event": f"video.{kind}", "idempotency_key": key, "video": video}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


PAYLOAD_COLUMNS = (
    "video_id", "state", "status_code", "status_name", "status_final", "url", "first_frame",
    "prompt", "model", "duration", "output_width", "output_height", "upstream_created_at",
    "enqueued_at", "updated_at", "done_at", "poll_count", "error_count", "last_http_status",
    "last_error", "abandon_reason", "record",
)  # fmt: skip


def retry_delay(attempts: int, rng: random.Random) -> float:
    """Exponential from 10 s, capped at an hour, with jitter so retries do not march in step."""
    base = min(MAX_RETRY, FIRST_RETRY * 2 ** min(attempts, 20))
    return rng.uniform(base * 0.8, base)

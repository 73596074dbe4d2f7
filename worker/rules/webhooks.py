"""Webhooks: completion POSTs to applications. URL rules, the signed body, retry timing.

Pure functions. When a row becomes done or abandoned and has a webhook URL (its own, or
TRACKER_WEBHOOK_URL), ``service.apply`` writes the delivery into ``webhook_outbox`` in the same
transaction; ``sender`` POSTs what is owed. Signatures follow Standard Webhooks
(https://www.standardwebhooks.com), so receivers can verify with an existing library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pixverse_tracker.rules import addresses
from pixverse_tracker.rules.columns import PAYLOAD_COLUMNS
from pixverse_tracker.rules.errors import TrackerError

MAX_URL_LENGTH = 2048
# Standard Webhooks: the message id (the same on every retry), when this attempt was signed
# (Unix seconds), and ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``.
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Pixverse-Tracker-Event"
SECRET_PREFIX = "whsec_"
TOLERANCE = 300.0  # seconds a receiver accepts a timestamp away from its clock (the spec's 5 min)
FIRST_RETRY = 10.0  # seconds; doubles per attempt
MAX_RETRY = 3600.0


class InvalidWebhookUrl(TrackerError, ValueError):
    """A webhook URL the tracker will not POST to."""


# Deprecated: the name before 0.2 (when "callback" meant the outbound webhook too). The same
# class, so ``except InvalidCallbackUrl`` still catches it.
InvalidCallbackUrl = InvalidWebhookUrl


def validate_url(url: str) -> str:
    """http(s), a host, bounded length, no credentials or fragment, not a literal address that
    is never allowed (addresses.py); else InvalidWebhookUrl."""
    text = url.strip()
    if not text:
        raise InvalidWebhookUrl("webhook URL is empty")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidWebhookUrl("webhook URL contains whitespace or control characters")
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"webhook URL is malformed: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise InvalidWebhookUrl(f"webhook URL must be http or https, not {parts.scheme!r}")
    if not host:
        raise InvalidWebhookUrl("webhook URL has no host")
    if parts.username or parts.password:
        raise InvalidWebhookUrl("webhook URL must not carry credentials (use the signature)")
    if parts.fragment:
        raise InvalidWebhookUrl("webhook URL must not have a #fragment")
    problem = addresses.never_allowed(host)
    if problem is not None:
        raise InvalidWebhookUrl(f"webhook URL host {problem}")
    return text


class InvalidSecret(TrackerError, ValueError):
    """A signing secret the tracker cannot use."""


def signing_key(secret: str) -> bytes:
    """The HMAC key: ``whsec_<base64>`` is decoded, as Standard Webhooks libraries do; any other
    secret is used as its UTF-8 bytes, as before, so existing receivers keep their secret (they
    give the library those bytes, see docs/webhooks.md)."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret(f"a {SECRET_PREFIX} secret must be followed by base64") from None
    if not key:
        raise InvalidSecret(f"a {SECRET_PREFIX} secret must not be empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: HMAC-SHA256 of ``id.timestamp.body``, so a captured signature is only
    good for that message at that time."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    key: bytes, headers: Mapping[str, str], body: bytes, now: float, tolerance: float = TOLERANCE
) -> bool:
    """What a receiving application does: the timestamp within ``tolerance`` of ``now``, and
    one of the (space-separated) signatures matching, compared in constant time."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get(ID_HEADER, "")
    stamp = lowered.get(TIMESTAMP_HEADER, "")
    if not (msg_id and stamp.isascii() and stamp.isdigit()) or abs(now - int(stamp)) > tolerance:
        return False
    expected = sign(key, msg_id, int(stamp), body)
    return any(
        hmac.compare_digest(expected, given) for given in lowered.get(SIGNATURE_HEADER, "").split()
    )


def signed_headers(key: bytes, msg_id: str, kind: str, body: bytes, now: float) -> dict[str, str]:
    """The headers of one attempt: signed afresh each time (a retry carries a new timestamp)."""
    timestamp = int(now)
    return {
        "Content-Type": "application/json",
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(key, msg_id, timestamp, body),
        IDEMPOTENCY_HEADER: msg_id,
        EVENT_HEADER: f"video.{kind}",
        "User-Agent": "pixverse-tracker-webhooks",
    }


def shown_url(url: str) -> str:
    """A webhook URL fit for logs and stored errors: no ``user:password@``, the query string
    and fragment replaced by ``…`` (they often carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparseable URL)"
    if ":" in host:
        host = f"[{host}]"
    hidden = "?…" if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")) else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{hidden}"


def scrub_url(text: str, url: str) -> str:
    """``text`` with every appearance of ``url``'s query and credentials redacted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text.replace(url, "(webhook URL)")
    text = text.replace(url, shown_url(url))
    for secret in (parts.query, parts.fragment, parts.password, parts.username):
        if secret and len(secret) >= 3:
            text = text.replace(secret, "…")
    return text


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


def retry_delay(attempts: int, rng: random.Random) -> float:
    """Exponential from 10 s, capped at an hour, with jitter so retries do not march in step."""
    base = min(MAX_RETRY, FIRST_RETRY * 2 ** min(attempts, 20))
    return rng.uniform(base * 0.8, base)

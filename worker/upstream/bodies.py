"""What the upstream sent, made safe to use: a body read whole (or why not), its JSON parsed
strictly, its error text and Retry-After read, every message scrubbed of the token and bounded.

Pure functions; the transport reads the bytes, ``upstream.answers`` gives them a meaning.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

from pixverse_tracker.rules import records

# Upstream text ends up in logs and rows; a bound keeps a chatty error page from flooding them.
MAX_MESSAGE_CHARS: Final = 500


# A Retry-After beyond an hour is more likely a bug than advice; the poller's deadline rules.
MAX_RETRY_AFTER: Final = 3600.0


REDACTED: Final = records.REDACTED

_DELTA_SECONDS: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")

_WHITESPACE_RUN: Final = re.compile(r"\s+")


@dataclass(frozen=True)
class Body:
    """What reading a response body produced: the bytes, or why they could not be had whole."""

    data: bytes = b""
    failure: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), clamped to [0, 3600].

    Returns None when the header is absent or unreadable, so callers fall back to their own backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        # float() rather than int(): huge digit strings become inf (clamped) instead of raising.
        return _clamp_delay(float(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # A date without a usable zone ("-0000", asctime) is UTC by HTTP's definition.
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return _clamp_delay((when - current).total_seconds())


def _clamp_delay(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def clean_message(text: str, secrets: tuple[str, ...]) -> str:
    """Upstream text made safe to log: token scrubbed, one line, at most MAX_MESSAGE_CHARS."""
    # Scrub before cutting so a token straddling the cut cannot leave a readable prefix.
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = text[: MAX_MESSAGE_CHARS * 2]
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = _WHITESPACE_RUN.sub(" ", text).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    # Last line of defence (e.g. a replacement that recreated the token): drop the text entirely.
    if any(secret in text for secret in secrets):
        return "[redacted message]"
    return text


def clean_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """A JSON value from the upstream, bounded and scrubbed, keeping simple scalars as they are."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return clean_message(value, secrets)
    return clean_message(json.dumps(value, default=str), secrets)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON and cannot be stored in a JSONB column downstream.
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json(data: bytes) -> tuple[bool, Any]:
    """(True, value) for a strict JSON document, (False, None) for anything else."""
    try:
        return True, json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError, bad encodings and over-long integers.
        return False, None


def error_text(data: bytes) -> str:
    """The upstream's error text: the JSON "error" field when there is one, else the raw body."""
    ok, value = parse_json(data)
    if ok and isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])
    return data.decode("utf-8", errors="replace")

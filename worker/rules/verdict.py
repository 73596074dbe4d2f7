"""Reading one upstream record: its status, whether it is really final, its typed columns.

Pure functions: hostile values (wrong types, huge numbers, bad URLs) become None, never errors.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from pixverse_tracker.rules import records

COMPLETED = 1
TERMINAL_FAILURES = {6: "DELETED", 7: "MODERATED", 8: "FAILED"}
KNOWN_NAMES = {
    "COMPLETED": 1,
    "QUEUED": 5,
    "DELETED": 6,
    "MODERATED": 7,
    "FAILED": 8,
    "GENERATING": 10,
    "PROCESSING": 10,
}
MESSAGE_LIMIT = 500  # characters of upstream text kept in a row or an event


class Verdict(Enum):
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    ANOMALY = "anomaly"


INT32 = range(-(2**31), 2**31)  # the typed integer columns are 32-bit


def _as_int(value: Any) -> int | None:
    """An integer that fits the column, or None: hostile values never fail a write."""
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and len(value) < 32:
        try:
            number = int(value.strip())
        except ValueError:
            return None
    return number if number is not None and number in INT32 else None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # OverflowError: a 400-digit JSON integer
        return None
    return number if math.isfinite(number) else None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def _as_text(value: Any) -> str | None:
    return clean_text(value) if isinstance(value, str) else None


def clean_text(text: str) -> str:
    """Text every column can store (``records.clean_text``): no NUL, no lone surrogate."""
    return records.clean_text(text)


def clean_json(value: Any) -> Any:
    """The record as received, within the bounds of ``records.clean``: no NUL, no NaN, no
    container nested deeper than ``records.MAX_DEPTH`` (replaced by ``records.PRUNED``)."""
    return records.clean(value)


def status_of(record: dict[str, Any]) -> tuple[int | None, str | None, bool | None]:
    """(code, name, final flag); numbers-as-strings coerced, a missing code read off the name."""
    code = _as_int(record.get("video_status"))
    name = _as_text(record.get("video_status_name"))
    if code is None and name is not None:
        code = KNOWN_NAMES.get(name.strip().upper())
    return code, name, _as_bool(record.get("video_status_final"))


def judge(record: dict[str, Any]) -> tuple[Verdict, str | None]:
    """Is this record really final? ``video_status_final`` alone is not proof (upstream.md)."""
    code, name, final = status_of(record)
    url = (_as_text(record.get("url")) or "").strip()
    label = name or (f"status {code}" if code is not None else "no status")
    if final is False:
        if code == COMPLETED or code in TERMINAL_FAILURES:
            return Verdict.ANOMALY, f"{label} says it is not final; polling on"
        return Verdict.IN_PROGRESS, None
    # final is True, or absent (then the status code alone decides).
    if code == COMPLETED:
        if media_url(url) is not None:
            return Verdict.SUCCESS, None
        if url:
            # javascript:, data:, http:// ...: nothing an application should be handed to fetch
            scheme = url.partition(":")[0][:16] if ":" in url else "no scheme"
            return Verdict.ANOMALY, f"{label} with a url that is not https ({scheme}); polling on"
        return Verdict.ANOMALY, f"{label} without a url; polling on"
    if code in TERMINAL_FAILURES:
        return Verdict.FAILURE, None
    if final is True:
        return Verdict.ANOMALY, f"{label} claims to be final but is not a known final status"
    return Verdict.IN_PROGRESS, None


def media_url(value: Any) -> str | None:
    """The value when it is a URL an application may fetch: ``https`` with a host, else None.

    The media URL is handed on (the ``url`` column, webhooks); ``javascript:``, ``data:``,
    plain ``http://`` and the like are not a finished video's media, whatever the status says.
    """
    text = (_as_text(value) or "").strip()
    if not text or any(ch.isspace() or not ch.isprintable() for ch in text):
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    return text if parts.scheme == "https" and host else None


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON: equal digests, equal records."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def typed_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The typed copies of the fields people filter on; wrong types become NULL, never errors
    (and so do ``url`` and ``first_frame`` unless they are https: ``media_url``)."""
    code, name, final = status_of(record)
    duration = _as_float(record.get("duration"))
    if duration is None:
        duration = _as_float(record.get("video_duration"))
    return {
        "status_code": code,
        "status_name": name,
        "status_final": final,
        "url": media_url(record.get("url")),
        "first_frame": media_url(record.get("first_frame")),
        "prompt": _as_text(record.get("prompt")),
        "model": _as_text(record.get("model")),
        "duration": duration,
        "output_width": _as_int(record.get("output_width")),
        "output_height": _as_int(record.get("output_height")),
        "upstream_created_at": parse_time(record.get("created_at")),
    }


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # a time without a zone is ambiguous; keep it only in the record
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. year 1 with a positive offset
        return None


def short(text: str | None) -> str | None:
    if text is None:
        return None
    text = clean_text(text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."

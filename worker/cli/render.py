"""How the commands show videos: tables, JSON and CSV, times and ages as a person reads them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from pixverse_tracker.rules.columns import LISTED_COLUMNS
from pixverse_tracker.rules.state import State


def stamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def age(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "-"
    seconds = int((now - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, default=json_default, indent=2, ensure_ascii=False)
    out.write("\n")


def video_dict(video: Any, *, with_record: bool = False) -> dict[str, Any]:
    row = {name: getattr(video, name) for name in LISTED_COLUMNS}
    if isinstance(row["state"], State):  # a row's State: shown as its plain string
        row["state"] = row["state"].value
    if with_record:
        row["record"] = video.record
    return row


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out.write(line.rstrip() + "\n")
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def video_rows(videos: Sequence[Any], now: datetime) -> list[list[str]]:
    rows = []
    for v in videos:
        detail = v.abandon_reason or v.url or v.last_error or ""
        rows.append(
            [
                v.video_id,
                v.state,
                v.status_name or ("-" if v.status_code is None else str(v.status_code)),
                str(v.poll_count),
                str(v.error_count),
                age(now, v.enqueued_at),
                detail if len(detail) <= 60 else detail[:57] + "...",
            ]
        )
    return rows


VIDEO_HEADERS = ("VIDEO_ID", "STATE", "STATUS", "POLLS", "ERRORS", "AGE", "URL / REASON")

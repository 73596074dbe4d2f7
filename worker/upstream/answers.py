"""What an upstream answer means: one HTTP status and body classified into its outcome, for
each endpoint (one video, an account's list, the scheduler). Pure: no network here.

Every expected answer is a value (``rules.outcomes``), never an exception; upstream text is
scrubbed of the token and bounded (``upstream.bodies``) before it reaches a log or a row.
"""

from __future__ import annotations

from typing import Any, Final

from pixverse_tracker.rules import records
from pixverse_tracker.rules.outcomes import (
    Deleted,
    Executing,
    ListOutcome,
    NotYet,
    Outcome,
    Page,
    RateLimited,
    Record,
    Rejected,
    SchedulerOutcome,
    Transient,
    Unauthorized,
)
from pixverse_tracker.upstream.bodies import (
    Body,
    clean_message,
    clean_value,
    error_text,
    parse_json,
    parse_retry_after,
)

# Only this phrase means the video is gone; the generic 404 sentence also contains "deleted".
_DELETED_MARKER: Final = "has been deleted"


_ERROR_ONLY_KEYS: Final = frozenset({"error", "code"})

# Where a scheduler item keeps its id: the current form first, then the earlier ones.
_SCHEDULER_ID_FIELDS: Final = ("id", "videoId", "video_id")


_TRANSIENT_LABELS: Final[dict[int, str]] = {
    408: "request timeout",
    412: "precondition failed (out of credits)",
    425: "too early",
    596: "account on hold",
}


def is_redirect(status: int) -> bool:
    return 300 <= status < 400


def _status_reason(status: int) -> str:
    if is_redirect(status):
        return f"HTTP {status}: redirect not followed"
    if status in _TRANSIENT_LABELS:
        return f"HTTP {status}: {_TRANSIENT_LABELS[status]}"
    if 500 <= status < 600:
        return f"HTTP {status}: server error"
    return f"HTTP {status}: unexpected status"


def classify_video(
    video_id: str,
    status: int,
    body: Body,
    retry_after: str | None,
    latency: float,
    secrets: tuple[str, ...],
) -> Outcome:
    """Map one HTTP answer to its outcome; the status decides, the body only where it must."""
    if status == 200:
        return _classify_record(video_id, body, latency, secrets)
    if status == 404:
        if body.failure is not None:
            # Deleted vs not-yet lives in the body; without it we cannot tell, so retry.
            return Transient(f"HTTP 404 but {body.failure}", 404, latency, dict(body.detail))
        text = error_text(body.data)
        message = clean_message(text, secrets)
        if _DELETED_MARKER in text.casefold():
            return Deleted(message=message, latency=latency)
        return NotYet(message=message, latency=latency)
    return _classify_status(status, body, retry_after, latency, secrets)


def _message(body: Body, secrets: tuple[str, ...]) -> str:
    # Where the status alone decides, an unreadable body only costs the message.
    return clean_message(error_text(body.data), secrets) if body.failure is None else ""


def _classify_status(
    status: int,
    body: Body,
    retry_after: str | None,
    latency: float,
    secrets: tuple[str, ...],
) -> Rejected | Unauthorized | RateLimited | Transient:
    """The outcome of an answer whose status alone decides, on either endpoint."""
    message = _message(body, secrets)
    if status == 400:
        return Rejected(message=message, http_status=400, latency=latency)
    if status in (401, 403):
        return Unauthorized(message=message, http_status=status, latency=latency)
    if status == 429:
        return RateLimited(
            retry_after=parse_retry_after(retry_after), message=message, latency=latency
        )
    detail: dict[str, Any] = {}
    if message:
        detail["message"] = message
    hinted = parse_retry_after(retry_after)
    if hinted is not None:
        # Not one of Transient's fields, but a 503's Retry-After is worth passing to the backoff.
        detail["retry_after"] = hinted
    return Transient(_status_reason(status), status, latency, detail)


def _classify_record(
    video_id: str, body: Body, latency: float, secrets: tuple[str, ...]
) -> Outcome:
    if body.failure is not None:
        return Transient(body.failure, 200, latency, dict(body.detail))
    ok, value = parse_json(body.data)
    if not ok:
        # Decode it all: cutting the bytes before scrubbing could leave a token prefix behind.
        snippet = clean_message(body.data.decode("utf-8", errors="replace"), secrets)
        return Transient("200 body is not valid JSON", 200, latency, {"body": snippet})
    if not isinstance(value, dict):
        return Transient(
            "200 body is JSON but not an object", 200, latency, {"type": type(value).__name__}
        )
    got = value.get("video_id")
    if got is None:
        # Every field is optional upstream, so a record without an id is still a record; but an
        # object holding nothing but an error is an error answer wearing a 200.
        if "error" in value and set(value) <= _ERROR_ONLY_KEYS:
            message = clean_value(value.get("error"), secrets)
            return Transient(
                "200 body holds an error, not a record", 200, latency, {"message": message}
            )
        return Record(record=records.clean(value, secrets), latency=latency)
    if got != video_id:
        # Storing another video's record under this id would be silent corruption.
        return Transient(
            "200 record is for another video", 200, latency, {"got": clean_value(got, secrets)}
        )
    # Cleaned here, where the token is known: an upstream that echoes it must not get it stored
    # or forwarded, and a record nested absurdly deep is bounded before anything walks it.
    return Record(record=records.clean(value, secrets), latency=latency)


def classify_list(
    status: int,
    body: Body,
    retry_after: str | None,
    latency: float,
    secrets: tuple[str, ...],
    offset: int,
    limit: int,
) -> ListOutcome:
    """Map one answer of the list endpoint to its outcome."""
    if status == 200:
        return _classify_page(body, latency, secrets, offset, limit)
    if status == 404:
        # The list is unusable for this account (unknown email, route gone); it says nothing
        # about any one video, so the caller falls back to single-video polls.
        return Rejected(message=_message(body, secrets), http_status=404, latency=latency)
    return _classify_status(status, body, retry_after, latency, secrets)


def _classify_page(
    body: Body, latency: float, secrets: tuple[str, ...], offset: int, limit: int
) -> Page | Transient:
    if body.failure is not None:
        return Transient(body.failure, 200, latency, dict(body.detail))
    ok, value = parse_json(body.data)
    if not ok:
        snippet = clean_message(body.data.decode("utf-8", errors="replace"), secrets)
        return Transient("200 body is not valid JSON", 200, latency, {"body": snippet})
    fields: dict[str, Any]
    if isinstance(value, list):
        # Some readings of the API give the array bare, without the {"data": ...} wrapper.
        items, fields = value, {}
    elif isinstance(value, dict):
        if "error" in value and set(value) <= _ERROR_ONLY_KEYS:
            message = clean_value(value.get("error"), secrets)
            return Transient(
                "200 body holds an error, not a page", 200, latency, {"message": message}
            )
        data = value.get("data")
        if not isinstance(data, list):
            detail = {"data": "missing" if "data" not in value else type(data).__name__}
            return Transient("200 list body has no data array", 200, latency, detail)
        items, fields = data, value
    else:
        return Transient(
            "200 body is JSON but neither an object nor an array",
            200,
            latency,
            {"type": type(value).__name__},
        )
    entries = tuple(
        records.clean(item, secrets)
        for item in items
        if isinstance(item, dict) and isinstance(item.get("video_id"), str) and item["video_id"]
    )
    return Page(
        entries=entries,
        offset=offset,
        next_offset=_next_offset(fields, len(items), offset, limit),
        dropped=len(items) - len(entries),
        latency=latency,
    )


def classify_scheduler(
    status: int,
    body: Body,
    retry_after: str | None,
    latency: float,
    secrets: tuple[str, ...],
) -> SchedulerOutcome:
    """Map one answer of the scheduler to its outcome."""
    if status == 200:
        return _classify_executing(body, latency, secrets)
    if status == 404:
        # No scheduler here (route gone, another API version): it says nothing about any
        # video, so the caller falls back to the other endpoints.
        return Rejected(message=_message(body, secrets), http_status=404, latency=latency)
    return _classify_status(status, body, retry_after, latency, secrets)


def _classify_executing(
    body: Body, latency: float, secrets: tuple[str, ...]
) -> Executing | Transient:
    if body.failure is not None:
        return Transient(body.failure, 200, latency, dict(body.detail))
    ok, value = parse_json(body.data)
    if not ok:
        snippet = clean_message(body.data.decode("utf-8", errors="replace"), secrets)
        return Transient("scheduler answer is not valid JSON", 200, latency, {"body": snippet})
    if isinstance(value, dict):
        if "error" in value and set(value) <= _ERROR_ONLY_KEYS:
            message = clean_value(value.get("error"), secrets)
            return Transient(
                "scheduler answer holds an error, not a list", 200, latency, {"message": message}
            )
        # GET /scheduler/available wraps the same items as {"executing": [...], "available": ...}.
        executing = value.get("executing")
        if not isinstance(executing, list):
            detail = {
                "executing": "missing" if "executing" not in value else type(executing).__name__
            }
            return Transient("scheduler answer has no executing list", 200, latency, detail)
        value = executing
    if not isinstance(value, list):
        return Transient(
            "scheduler answer is not a list", 200, latency, {"type": type(value).__name__}
        )
    ids: dict[str, None] = {}  # an ordered set
    dropped = 0
    for item in value:
        job_id = _scheduler_id(item)
        # An "id" carrying the token is an echo, not a job of ours, and must not reach the logs.
        if job_id is None or any(secret in job_id for secret in secrets):
            dropped += 1
        else:
            ids[job_id] = None
    return Executing(ids=tuple(ids), dropped=dropped, latency=latency)


def _scheduler_id(item: Any) -> str | None:
    """The job id of one scheduler item, kept exactly as sent; None when it has no usable one."""
    if isinstance(item, str):
        return item or None
    if not isinstance(item, dict):
        return None
    for name in _SCHEDULER_ID_FIELDS:
        found = item.get(name)
        if isinstance(found, str):
            # The first string the item offers decides: an empty one is not an invitation to guess.
            return found or None
    return None


def _next_offset(fields: dict[str, Any], count: int, offset: int, limit: int) -> int | None:
    """Where the page after this one starts, or None when this is the last one."""
    has_more = fields.get("has_more")
    if not isinstance(has_more, bool):
        # The documented page carries no paging info: only a full page may have a successor.
        # Counted on the raw items, so dropped entries do not end the listing early.
        has_more = count >= limit
    if not has_more:
        return None
    declared = fields.get("next_offset")
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > offset:
        return declared
    # An empty page that claims more would send the caller to the same offset forever.
    following = offset + count
    return following if following > offset else None

"""Which endpoint a request to the simulator names (one video, an account's list, the
scheduler), the list's paging parameters, and the log entries of what it answered."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from pixverse_tracker.testing.responders import Answer, bad_request

_ENDPOINT_PREFIX = ["", "v2", "pixverse", "videos"]

_SCHEDULER_PREFIX = ["", "v2", "pixverse", "scheduler"]

DEFAULT_LIMIT, MAX_LIMIT = 40, 100
_INTEGER_RE = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class LoggedRequest:
    """One request the simulator answered.

    ``started`` is its arrival and ``finished`` the moment its answer was about to be written,
    both ``time.monotonic()`` values.
    """

    video_id: str | None
    path: str
    status: int
    started: float
    finished: float
    authorized: bool
    # "video" (one video), "list" (an account's videos), "scheduler" (either scheduler read)
    # or "other"
    kind: str = "video"
    email: str | None = None  # the decoded email parameter of a list request


@dataclass(frozen=True)
class SchedulerRead:
    """One scheduler request the simulator answered, and the ids its answer listed."""

    at: float  # time.time() when answered
    status: int
    ids: tuple[str, ...]  # ids listed in that answer; () for anything but a 200 listing


@dataclass(frozen=True)
class Route:
    """Which endpoint a request path names."""

    kind: str
    video_id: str | None = None
    query: dict[str, list[str]] = field(default_factory=dict)  # the list's parameters
    available: bool = False  # the scheduler's /available form


def route_of(raw_path: str) -> Route:
    """Which endpoint the path names: one video (with its decoded id), the list, or neither."""
    path, _, rest = raw_path.partition("?")
    path = path.split("#", 1)[0]
    # parse_qs decodes like any HTTP server: %2B is "+", a raw "+" is a space.
    query = parse_qs(rest.split("#", 1)[0], keep_blank_values=True)
    # Split before decoding so an encoded "/" (%2F) never creates or removes a segment.
    segments = [unquote(segment) for segment in path.split("/")]
    if segments[:4] == _SCHEDULER_PREFIX:
        tail = segments[4:]
        if tail in ([], [""]):
            return Route("scheduler")
        if tail in (["available"], ["available", ""]):
            return Route("scheduler", available=True)
        return Route("other")
    if segments[:4] != _ENDPOINT_PREFIX or len(segments) > 5:
        return Route("other")
    if len(segments) == 4 or not segments[4]:
        return Route("list", query=query)
    return Route("video", video_id=segments[4])


def query_value(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def list_window(query: dict[str, list[str]]) -> tuple[int, int] | Answer:
    """(limit, offset) from the query, or the 400 answer naming the bad parameter."""
    limit_text = query_value(query, "limit")
    offset_text = query_value(query, "offset")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not _INTEGER_RE.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            return bad_request(f"Parameter limit must be an integer from 1 to {MAX_LIMIT}")
        limit = int(limit_text)
    offset = 0
    if offset_text is not None:
        if not _INTEGER_RE.fullmatch(offset_text) or int(offset_text) < 0:
            return bad_request("Parameter offset must be a non-negative integer")
        offset = int(offset_text)
    return limit, offset

"""What one upstream answer means: the typed outcomes the client returns instead of raising.

Every expected answer of ``GET /v2/pixverse/videos/{video_id}`` maps to exactly one of these,
and every answer of the list endpoint ``GET /v2/pixverse/videos/?email=`` to one of
``ListOutcome``, and every answer of the token-wide scheduler ``GET /v2/pixverse/scheduler/``
to one of ``SchedulerOutcome``. They are plain values so the rules can be tested without any HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Record:
    """200 with a JSON object whose ``video_id`` matches the one asked for."""

    record: dict[str, Any]
    http_status: int = 200
    latency: float = 0.0


@dataclass(frozen=True)
class NotYet:
    """404 that is not the specific deletion message: the video is still processing (or unknown)."""

    message: str = ""
    http_status: int = 404
    latency: float = 0.0


@dataclass(frozen=True)
class Deleted:
    """404 whose error says the video "has been deleted"."""

    message: str = ""
    http_status: int = 404
    latency: float = 0.0


@dataclass(frozen=True)
class Rejected:
    """400 (or another 4xx that says the request itself is wrong), with the upstream's message."""

    message: str = ""
    http_status: int = 400
    latency: float = 0.0


@dataclass(frozen=True)
class Unauthorized:
    """401: the token is bad or missing. Affects every id alike."""

    message: str = ""
    http_status: int = 401
    latency: float = 0.0


@dataclass(frozen=True)
class RateLimited:
    """429: slow down. ``retry_after`` is seconds from now when the upstream said so."""

    retry_after: float | None = None
    message: str = ""
    http_status: int = 429
    latency: float = 0.0


@dataclass(frozen=True)
class Transient:
    """Anything worth retrying: 5xx, timeouts, resets, bad bodies, a record for another id."""

    reason: str = ""
    http_status: int | None = None
    latency: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Listed:
    """A list page showed this video still in progress (QUEUED, GENERATING, ...).

    It is an answer about the video like a 404 "not yet", with its status to go by; the entry
    is not stored as the row's record (its ``queue_data`` changes with every read).
    """

    entry: dict[str, Any]
    http_status: int = 200
    latency: float = 0.0


@dataclass(frozen=True)
class Page:
    """200 from the list endpoint: one page of an account's videos, newest first.

    ``entries`` are the objects that carry a string ``video_id``, as received; ``dropped``
    counts the other items of the page. ``next_offset`` is where the next page starts, or
    None when the upstream says (or the page shows) that this was the last one.
    """

    entries: tuple[dict[str, Any], ...]
    offset: int
    next_offset: int | None
    dropped: int = 0
    http_status: int = 200
    latency: float = 0.0


@dataclass(frozen=True)
class Executing:
    """200 from the scheduler: the ids of the jobs still executing, for every account of the token.

    Only jobs started through the API with this token are listed, never videos made on the
    website: an id missing here says nothing on its own. ``ids`` keep the order received,
    without repeats; ``dropped`` counts the items that carried no usable id.
    """

    ids: tuple[str, ...]
    dropped: int = 0
    http_status: int = 200
    latency: float = 0.0


Outcome = Record | NotYet | Deleted | Rejected | Unauthorized | RateLimited | Transient | Listed
# What one list request can answer: a 400 or 404 there says the list is unusable for that
# account (the ids fall back to single-video polls), never that a video is gone.
ListOutcome = Page | Rejected | Unauthorized | RateLimited | Transient
# What one scheduler read can answer: a 400 or 404 there says the endpoint does not work here
# (the tracker falls back to the other endpoints), never anything about one video.
SchedulerOutcome = Executing | Rejected | Unauthorized | RateLimited | Transient

# Stable names, used in logs, events, metrics and the poll counters.
KIND: dict[type[Any], str] = {
    Record: "record",
    NotYet: "not_yet",
    Deleted: "deleted",
    Rejected: "rejected",
    Unauthorized: "unauthorized",
    RateLimited: "rate_limited",
    Transient: "transient",
    Listed: "listed",
    Page: "page",
    Executing: "scheduler",
}


def kind_of(outcome: Outcome | ListOutcome | SchedulerOutcome) -> str:
    """The stable machine name of an outcome's kind."""
    return KIND[type(outcome)]


@dataclass
class PollCounts:
    """Per-batch tally of poll outcomes, written once per batch."""

    polls: int = 0
    errors: int = 0
    rate_limited: int = 0
    unauthorized: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome | ListOutcome | SchedulerOutcome) -> None:
        kind = kind_of(outcome)
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.polls += 1
        if isinstance(outcome, Transient):
            self.errors += 1
        elif isinstance(outcome, RateLimited):
            self.rate_limited += 1
        elif isinstance(outcome, Unauthorized):
            self.unauthorized += 1

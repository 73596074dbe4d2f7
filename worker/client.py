"""Client for useapi.net's PixVerse v2 endpoints (video, list, scheduler), answers as outcomes."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from importlib import metadata
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3
from requests.auth import AuthBase

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

__all__ = [
    "MAX_EMAIL_CHARS",
    "MAX_LIST_LIMIT",
    "MAX_MESSAGE_CHARS",
    "MAX_RETRY_AFTER",
    "SCHEDULER_PATH",
    "VIDEOS_PATH",
    "UseapiClient",
    "list_url",
    "parse_retry_after",
    "scheduler_url",
    "video_url",
]

VIDEOS_PATH: Final = "/v2/pixverse/videos/"
SCHEDULER_PATH: Final = "/v2/pixverse/scheduler/"
# Upstream text ends up in logs and rows; a bound keeps a chatty error page from flooding them.
MAX_MESSAGE_CHARS: Final = 500
# A Retry-After beyond an hour is more likely a bug than advice; the poller's deadline rules.
MAX_RETRY_AFTER: Final = 3600.0
# 64 local + "@" + 255 domain characters (RFC 3696): anything longer is not an address.
MAX_EMAIL_CHARS: Final = 320
# The upstream documents its default page (40) but no maximum; a page stays a bounded body.
MAX_LIST_LIMIT: Final = 100

_CHUNK_BYTES: Final = 64 * 1024
_REDACTED: Final = records.REDACTED
# Only this phrase means the video is gone; the generic 404 sentence also contains "deleted".
_DELETED_MARKER: Final = "has been deleted"
_DELTA_SECONDS: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_WHITESPACE_RUN: Final = re.compile(r"\s+")
_ERROR_ONLY_KEYS: Final = frozenset({"error", "code"})
# Where a scheduler item keeps its id: the current form first, then the earlier ones.
_SCHEDULER_ID_FIELDS: Final = ("id", "videoId", "video_id")

_TRANSIENT_LABELS: Final[dict[int, str]] = {
    408: "request timeout",
    412: "precondition failed (out of credits)",
    425: "too early",
    596: "account on hold",
}

# Everything the network, TLS, HTTP parsing or urllib3 can throw while talking to the upstream.
_TRANSPORT_ERRORS: Final = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
# requests parses a redirect's Location even with allow_redirects=False and lets ValueError escape
# for a malformed one ("Invalid IPv6 URL"): around the request itself it is an upstream fault.
_REQUEST_ERRORS: Final = (*_TRANSPORT_ERRORS, ValueError)


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def video_url(base_url: str, video_id: str) -> str:
    """The URL of one video record, with ``video_id`` confined to a single path segment.

    Raises ValueError for an empty id, for "." or ".." (urllib3 would normalise those dot
    segments away and change the path), and for an id that cannot be encoded as UTF-8.
    """
    if video_id in ("", ".", ".."):
        raise ValueError(f"invalid video id: {video_id!r}")
    # quote() leaves only unreserved characters, ":" and "@" alone, so "/", "?", "#", "%" and
    # spaces cannot change the path, query or fragment; "+" becomes %2B because some servers
    # still read a raw "+" in a path as a space.
    try:
        segment = quote(video_id, safe=":@")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid video id: {video_id!r}") from exc
    return base_url.rstrip("/") + VIDEOS_PATH + segment


def list_url(base_url: str, email: str, limit: int, offset: int) -> str:
    """The URL of one page of an account's video list, with ``email`` confined to its parameter.

    Raises ValueError for an empty email, one with whitespace or control characters or longer
    than MAX_EMAIL_CHARS, a limit outside 1..MAX_LIST_LIMIT and a negative offset.
    """
    if not email or len(email) > MAX_EMAIL_CHARS:
        raise ValueError(f"invalid email: {email[:MAX_EMAIL_CHARS]!r}")
    if any(ch.isspace() or not ch.isprintable() for ch in email):
        raise ValueError(f"invalid email: {email!r}")
    # bool is an int, and a float would render as "40.0": both are the caller's bug.
    if type(limit) is not int or not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be an int in 1..{MAX_LIST_LIMIT}: {limit!r}")
    if type(offset) is not int or offset < 0:
        raise ValueError(f"offset must be a non-negative int: {offset!r}")
    # quote() rather than quote_plus(): a raw "+" in a query reads as a space, so plus-addressed
    # mail must go as %2B; "&", "=", "#", "?", "/" and "%" are encoded too, so no email can add
    # a parameter, end the query or touch the path. "@" is legal in a query and easier to read.
    try:
        query = urlencode(
            {"email": email, "limit": limit, "offset": offset}, quote_via=quote, safe="@"
        )
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid email: {email!r}") from exc
    return base_url.rstrip("/") + VIDEOS_PATH + "?" + query


def scheduler_url(base_url: str) -> str:
    """The URL of the token-wide scheduler: every job started through the API still executing."""
    return base_url.rstrip("/") + SCHEDULER_PATH


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


def _clean_text(text: str, secrets: tuple[str, ...]) -> str:
    """Upstream text made safe to log: token scrubbed, one line, at most MAX_MESSAGE_CHARS."""
    # Scrub before cutting so a token straddling the cut cannot leave a readable prefix.
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    text = text[: MAX_MESSAGE_CHARS * 2]
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = _WHITESPACE_RUN.sub(" ", text).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    # Last line of defence (e.g. a replacement that recreated the token): drop the text entirely.
    if any(secret in text for secret in secrets):
        return "[redacted message]"
    return text


def _clean_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """A JSON value from the upstream, bounded and scrubbed, keeping simple scalars as they are."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _clean_text(value, secrets)
    return _clean_text(json.dumps(value, default=str), secrets)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON and cannot be stored in a JSONB column downstream.
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_json(data: bytes) -> tuple[bool, Any]:
    """(True, value) for a strict JSON document, (False, None) for anything else."""
    try:
        return True, json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError, bad encodings and over-long integers.
        return False, None


def _error_text(data: bytes) -> str:
    """The upstream's error text: the JSON "error" field when there is one, else the raw body."""
    ok, value = _parse_json(data)
    if ok and isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])
    return data.decode("utf-8", errors="replace")


def _exception_chain(exc: BaseException, limit: int = 12) -> Iterator[BaseException]:
    """The exception and what it wraps (causes, contexts, urllib3 reasons, exception args)."""
    seen: set[int] = set()
    pending = [exc]
    while pending and len(seen) < limit:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked: list[Any] = [
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
        ]
        linked.extend(current.args)
        pending.extend(item for item in linked if isinstance(item, BaseException))


def _describe_error(exc: BaseException) -> str:
    """A short, stable name for what went wrong on the wire."""
    # Most specific first: several requests exceptions belong to two families at once, and
    # urllib3's NewConnectionError is (for history's sake) a ConnectTimeoutError.
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return _describe_connection_error(exc)
    if isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return "read timeout"
    if isinstance(
        exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    ):
        return "timeout"
    if isinstance(exc, (requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError)):
        return "TLS error"
    if isinstance(exc, (requests.exceptions.ProxyError, urllib3.exceptions.ProxyError)):
        return "proxy error"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError)):
        return "content decoding error"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "broken chunked encoding"
    if isinstance(
        exc,
        (
            requests.exceptions.ConnectionError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.NewConnectionError,
            http.client.HTTPException,
            ConnectionError,
        ),
    ):
        return _describe_connection_error(exc)
    if isinstance(exc, requests.exceptions.InvalidURL):
        return "invalid URL"
    if isinstance(exc, requests.exceptions.InvalidHeader):
        return "invalid header"
    if isinstance(exc, requests.RequestException):
        # Before OSError: every requests exception is an IOError.
        return "request failed"
    if isinstance(exc, ValueError):
        return "malformed response"
    if isinstance(exc, OSError):
        return "network error"
    return "request failed"


def _describe_connection_error(exc: BaseException) -> str:
    # Refused and reset read differently in an incident, so name them when the chain says so.
    for inner in _exception_chain(exc):
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused"
        if isinstance(inner, ConnectionResetError):
            return "connection reset"
    return "connection error"


def _error_detail(exc: BaseException, secrets: tuple[str, ...]) -> dict[str, Any]:
    return {"exception": type(exc).__name__, "message": _clean_text(str(exc), secrets)}


@dataclass(frozen=True)
class _Body:
    """What reading a response body produced: the bytes, or why they could not be had whole."""

    data: bytes = b""
    failure: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    """What came back for one request, before any endpoint's rules give it a meaning."""

    status: int
    body: _Body
    retry_after: str | None
    latency: float


def _is_redirect(status: int) -> bool:
    return 300 <= status < 400


def _status_reason(status: int) -> str:
    if _is_redirect(status):
        return f"HTTP {status}: redirect not followed"
    if status in _TRANSIENT_LABELS:
        return f"HTTP {status}: {_TRANSIENT_LABELS[status]}"
    if 500 <= status < 600:
        return f"HTTP {status}: server error"
    return f"HTTP {status}: unexpected status"


def _classify(
    video_id: str,
    status: int,
    body: _Body,
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
        text = _error_text(body.data)
        message = _clean_text(text, secrets)
        if _DELETED_MARKER in text.casefold():
            return Deleted(message=message, latency=latency)
        return NotYet(message=message, latency=latency)
    return _classify_status(status, body, retry_after, latency, secrets)


def _message(body: _Body, secrets: tuple[str, ...]) -> str:
    # Where the status alone decides, an unreadable body only costs the message.
    return _clean_text(_error_text(body.data), secrets) if body.failure is None else ""


def _classify_status(
    status: int,
    body: _Body,
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
    video_id: str, body: _Body, latency: float, secrets: tuple[str, ...]
) -> Outcome:
    if body.failure is not None:
        return Transient(body.failure, 200, latency, dict(body.detail))
    ok, value = _parse_json(body.data)
    if not ok:
        # Decode it all: cutting the bytes before scrubbing could leave a token prefix behind.
        snippet = _clean_text(body.data.decode("utf-8", errors="replace"), secrets)
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
            message = _clean_value(value.get("error"), secrets)
            return Transient(
                "200 body holds an error, not a record", 200, latency, {"message": message}
            )
        return Record(record=records.clean(value, secrets), latency=latency)
    if got != video_id:
        # Storing another video's record under this id would be silent corruption.
        return Transient(
            "200 record is for another video", 200, latency, {"got": _clean_value(got, secrets)}
        )
    # Cleaned here, where the token is known: an upstream that echoes it must not get it stored
    # or forwarded, and a record nested absurdly deep is bounded before anything walks it.
    return Record(record=records.clean(value, secrets), latency=latency)


def _classify_list(
    status: int,
    body: _Body,
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
    body: _Body, latency: float, secrets: tuple[str, ...], offset: int, limit: int
) -> Page | Transient:
    if body.failure is not None:
        return Transient(body.failure, 200, latency, dict(body.detail))
    ok, value = _parse_json(body.data)
    if not ok:
        snippet = _clean_text(body.data.decode("utf-8", errors="replace"), secrets)
        return Transient("200 body is not valid JSON", 200, latency, {"body": snippet})
    fields: dict[str, Any]
    if isinstance(value, list):
        # Some readings of the API give the array bare, without the {"data": ...} wrapper.
        items, fields = value, {}
    elif isinstance(value, dict):
        if "error" in value and set(value) <= _ERROR_ONLY_KEYS:
            message = _clean_value(value.get("error"), secrets)
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


def _classify_scheduler(
    status: int,
    body: _Body,
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
    body: _Body, latency: float, secrets: tuple[str, ...]
) -> Executing | Transient:
    if body.failure is not None:
        return Transient(body.failure, 200, latency, dict(body.detail))
    ok, value = _parse_json(body.data)
    if not ok:
        snippet = _clean_text(body.data.decode("utf-8", errors="replace"), secrets)
        return Transient("scheduler answer is not valid JSON", 200, latency, {"body": snippet})
    if isinstance(value, dict):
        if "error" in value and set(value) <= _ERROR_ONLY_KEYS:
            message = _clean_value(value.get("error"), secrets)
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


def _declared_length(value: str | None) -> int | None:
    text = (value or "").strip()
    # isascii: str.isdigit() also accepts digits like "²" that int() refuses.
    if not (text.isascii() and text.isdigit()):
        return None
    # Python refuses int() on very long digit strings; any such length is over the cap anyway.
    return int(text) if len(text) <= 18 else 10**18


def _shorten_socket_timeout(raw: Any, left: float) -> None:
    """Let the next socket read wait no longer than what is left of the deadline (a slow-drip
    body would otherwise get a whole read timeout per byte). Best effort: a transport without
    a reachable socket keeps its own timeout."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None or not hasattr(sock, "gettimeout"):
        return
    try:
        current = sock.gettimeout()
        if current is None or current > left:
            sock.settimeout(max(0.01, left))
    except OSError:
        pass


def _read_some(raw: Any, amount: int) -> bytes:
    """At most ``amount`` decoded body bytes, from a single socket read when urllib3 allows it."""
    if isinstance(raw, urllib3.response.HTTPResponse):
        # read1 returns after one recv, so the deadline check between reads stays meaningful;
        # read(amount) would block until all of ``amount`` trickled in. requests asks urllib3
        # not to decode, so decoding is requested here, and the cap counts decoded bytes.
        if hasattr(raw, "read1"):
            data = raw.read1(amount, decode_content=True)
        else:  # urllib3 1.x
            data = raw.read(amount, decode_content=True)
    else:
        data = raw.read(amount)
    return bytes(data) if data else b""


def _close_redirect(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Response hook: close a redirect before requests reads its body.

    Even with allow_redirects=False, requests consumes a redirect's whole body (uncapped) to
    prepare the next hop; closing the response first leaves it nothing to read.
    """
    if response.is_redirect:
        response.close()


def _close_quietly(response: requests.Response) -> None:
    # The outcome is already decided; a failing close only means the socket is gone anyway.
    with contextlib.suppress(*_TRANSPORT_ERRORS):
        response.close()


@cache
def _user_agent() -> str:
    try:
        version = metadata.version("pixverse-tracker")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"pixverse-tracker/{version}"


class _BearerAuth(AuthBase):
    """Sets the Bearer header; holds the token so nothing else (repr included) has to."""

    def __init__(self, token: str) -> None:
        self._token = token
        encoded = quote(token, safe="")
        # The forms an upstream might echo back; scrubbed from every message we keep.
        self.secrets: tuple[str, ...] = (token,) if encoded == token else (token, encoded)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        # Passing auth explicitly also stops requests from swapping in ~/.netrc credentials.
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token={_REDACTED})"


# ---------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------


class UseapiClient:
    """Fetches video records, pages of an account's video list and the scheduler from useapi.net.

    One instance (and one session) serves every poll thread of a process: we only send GETs
    with no cookies, and urllib3's connection pool is thread-safe; size the session's pool
    (``HTTPAdapter(pool_maxsize=...)``) to the number of requests in flight at once.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_body_bytes: int = 1_048_576,
        session: requests.Session | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"base_url must be an http(s) URL without query or fragment: {base_url!r}"
            )
        if (
            not token
            or not token.isascii()
            or any(ch.isspace() or not ch.isprintable() for ch in token)
        ):
            # Fail at start-up rather than on every request with an unusable header value.
            raise ValueError("token must be non-empty printable ASCII without whitespace")
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number of seconds")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._auth = _BearerAuth(token)
        self._connect_timeout = float(connect_timeout)
        self._read_timeout = float(read_timeout)
        self._max_body_bytes = max_body_bytes
        # A slow-drip server resets the per-read timeout with each byte; this bounds the whole body.
        self._body_deadline = self._connect_timeout + self._read_timeout
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._headers = {"Accept": "application/json", "User-Agent": _user_agent()}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self._base_url!r}, "
            f"connect_timeout={self._connect_timeout}, read_timeout={self._read_timeout}, "
            f"max_body_bytes={self._max_body_bytes})"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the session if this client created it; an injected session belongs to its owner."""
        if self._owns_session:
            self._session.close()

    def fetch(self, video_id: str) -> Outcome:
        """Ask the upstream about one video and say what the answer means.

        Never raises for anything the network or the upstream can do. Raises ValueError for an
        id that cannot be put in a URL (see ``video_url``): that is the caller's bug.
        """
        url = video_url(self._base_url, video_id)
        answer = self._get(url)
        if isinstance(answer, Transient):
            return answer
        return _classify(
            video_id,
            answer.status,
            answer.body,
            answer.retry_after,
            answer.latency,
            self._auth.secrets,
        )

    def list_videos(self, email: str, *, limit: int = 40, offset: int = 0) -> ListOutcome:
        """Ask the upstream for one page of an account's videos, newest first.

        Never raises for anything the network or the upstream can do. Raises ValueError for an
        email, limit or offset that ``list_url`` refuses: that is the caller's bug.
        """
        url = list_url(self._base_url, email, limit, offset)
        answer = self._get(url)
        if isinstance(answer, Transient):
            return answer
        return _classify_list(
            answer.status,
            answer.body,
            answer.retry_after,
            answer.latency,
            self._auth.secrets,
            offset,
            limit,
        )

    def scheduler(self) -> SchedulerOutcome:
        """Ask the upstream which jobs started through the API with this token still execute.

        One read answers for every account of the token. Never raises for anything the network
        or the upstream can do.
        """
        answer = self._get(scheduler_url(self._base_url))
        if isinstance(answer, Transient):
            return answer
        return _classify_scheduler(
            answer.status, answer.body, answer.retry_after, answer.latency, self._auth.secrets
        )

    def _get(self, url: str) -> _Answer | Transient:
        """One GET, body read whole under the cap and deadline; Transient if nothing came back."""
        secrets = self._auth.secrets
        started = time.monotonic()
        try:
            response = self._session.get(
                url,
                headers=self._headers,
                auth=self._auth,
                timeout=(self._connect_timeout, self._read_timeout),
                # A redirect must not carry the token elsewhere; it is reported, not followed.
                allow_redirects=False,
                stream=True,
                # Explicit, so an injected session that disabled certificate checks cannot win.
                verify=True,
                hooks={"response": [_close_redirect]},
            )
        except _REQUEST_ERRORS as exc:
            return Transient(
                _describe_error(exc), None, time.monotonic() - started, _error_detail(exc, secrets)
            )
        try:
            status = response.status_code
            body = _Body() if _is_redirect(status) else self._read_body(response, started)
            retry_after = response.headers.get("Retry-After")
        finally:
            _close_quietly(response)
        return _Answer(status, body, retry_after, time.monotonic() - started)

    def _read_body(self, response: requests.Response, started: float) -> _Body:
        """The body, read in chunks under the size cap and the deadline (at most cap + 1 bytes).

        The deadline counts from the request's start, so a whole request (connect, headers,
        body) ends within the connect plus the read timeout: the lease of a claimed id relies
        on that (``Settings.request_budget``).
        """
        cap = self._max_body_bytes
        declared = _declared_length(response.headers.get("Content-Length"))
        if declared is not None and declared > cap:
            return _Body(failure=f"body too large (declared {declared} bytes, cap {cap})")
        deadline = started + self._body_deadline
        buffer = bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return _Body(
                        failure=f"request exceeded its {self._body_deadline:g}s deadline "
                        "while reading the body"
                    )
                _shorten_socket_timeout(response.raw, left)
                chunk = _read_some(response.raw, min(_CHUNK_BYTES, cap + 1 - len(buffer)))
                if not chunk:
                    break
                buffer += chunk
                if len(buffer) > cap:
                    # The caller closes the response, dropping the connection with the rest unread.
                    return _Body(failure=f"body too large (over {cap} bytes)")
        except _TRANSPORT_ERRORS as exc:
            if time.monotonic() >= deadline - 0.01:  # the shortened socket timeout fired
                return _Body(
                    failure=f"request exceeded its {self._body_deadline:g}s deadline "
                    "while reading the body"
                )
            return _Body(
                failure=f"{_describe_error(exc)} while reading the body",
                detail=_error_detail(exc, self._auth.secrets),
            )
        return _Body(bytes(buffer))

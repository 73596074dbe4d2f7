"""The URLs of useapi.net's PixVerse v2 endpoints, with every caller's value confined to its
own path segment or query parameter."""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, urlencode

VIDEOS_PATH: Final = "/v2/pixverse/videos/"

SCHEDULER_PATH: Final = "/v2/pixverse/scheduler/"

# 64 local + "@" + 255 domain characters (RFC 3696): anything longer is not an address.
MAX_EMAIL_CHARS: Final = 320

# The upstream documents its default page (40) but no maximum; a page stays a bounded body.
MAX_LIST_LIMIT: Final = 100


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

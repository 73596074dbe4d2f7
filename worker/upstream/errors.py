"""Naming what went wrong on the wire: the exceptions a request can raise, as short stable
words (``connect timeout``, ``connection reset``, ``TLS error``) for outcomes and logs."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from typing import Any, Final

import requests
import urllib3

from pixverse_tracker.upstream.bodies import clean_message

# Everything the network, TLS, HTTP parsing or urllib3 can throw while talking to the upstream.
TRANSPORT_ERRORS: Final = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)

# requests parses a redirect's Location even with allow_redirects=False and lets ValueError escape
# for a malformed one ("Invalid IPv6 URL"): around the request itself it is an upstream fault.
REQUEST_ERRORS: Final = (*TRANSPORT_ERRORS, ValueError)


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


def describe_error(exc: BaseException) -> str:
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


def error_detail(exc: BaseException, secrets: tuple[str, ...]) -> dict[str, Any]:
    return {"exception": type(exc).__name__, "message": clean_message(str(exc), secrets)}

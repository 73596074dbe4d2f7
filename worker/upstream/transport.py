"""The useapi.net client: one GET per question, under a whole-request deadline and a body cap,
whose answer comes back as an outcome (``upstream.answers``) and never as an exception."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urlsplit

import requests
import urllib3
from requests.auth import AuthBase

from pixverse_tracker.rules.outcomes import ListOutcome, Outcome, SchedulerOutcome, Transient
from pixverse_tracker.upstream.answers import (
    classify_list,
    classify_scheduler,
    classify_video,
    is_redirect,
)
from pixverse_tracker.upstream.bodies import REDACTED, Body
from pixverse_tracker.upstream.errors import (
    REQUEST_ERRORS,
    TRANSPORT_ERRORS,
    describe_error,
    error_detail,
)
from pixverse_tracker.upstream.urls import list_url, scheduler_url, video_url

_CHUNK_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class _Answer:
    """What came back for one request, before any endpoint's rules give it a meaning."""

    status: int
    body: Body
    retry_after: str | None
    latency: float


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
    with contextlib.suppress(*TRANSPORT_ERRORS):
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
        return f"{type(self).__name__}(token={REDACTED})"


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
        return classify_video(
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
        return classify_list(
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
        return classify_scheduler(
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
        except REQUEST_ERRORS as exc:
            return Transient(
                describe_error(exc), None, time.monotonic() - started, error_detail(exc, secrets)
            )
        try:
            status = response.status_code
            body = Body() if is_redirect(status) else self._read_body(response, started)
            retry_after = response.headers.get("Retry-After")
        finally:
            _close_quietly(response)
        return _Answer(status, body, retry_after, time.monotonic() - started)

    def _read_body(self, response: requests.Response, started: float) -> Body:
        """The body, read in chunks under the size cap and the deadline (at most cap + 1 bytes).

        The deadline counts from the request's start, so a whole request (connect, headers,
        body) ends within the connect plus the read timeout: the lease of a claimed id relies
        on that (``Settings.request_budget``).
        """
        cap = self._max_body_bytes
        declared = _declared_length(response.headers.get("Content-Length"))
        if declared is not None and declared > cap:
            return Body(failure=f"body too large (declared {declared} bytes, cap {cap})")
        deadline = started + self._body_deadline
        buffer = bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return Body(
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
                    return Body(failure=f"body too large (over {cap} bytes)")
        except TRANSPORT_ERRORS as exc:
            if time.monotonic() >= deadline - 0.01:  # the shortened socket timeout fired
                return Body(
                    failure=f"request exceeded its {self._body_deadline:g}s deadline "
                    "while reading the body"
                )
            return Body(
                failure=f"{describe_error(exc)} while reading the body",
                detail=error_detail(exc, self._auth.secrets),
            )
        return Body(bytes(buffer))

"""Unit tests for pixverse_tracker.upstream (the transport and the answers), driven through a fake transport adapter mounted on the session."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from pixverse_tracker.rules.outcomes import (
    Deleted,
    NotYet,
    Outcome,
    RateLimited,
    Record,
    Rejected,
    Transient,
    Unauthorized,
)
from pixverse_tracker.upstream.bodies import MAX_MESSAGE_CHARS, MAX_RETRY_AFTER, parse_retry_after
from pixverse_tracker.upstream.transport import UseapiClient
from pixverse_tracker.upstream.urls import VIDEOS_PATH, video_url

# Distinctive, and full of characters that percent-encode, so an echo in any form is caught.
TOKEN = "tok-SECRET+7f3a/9c1e=5b_d00d"
ENCODED_TOKEN = quote(TOKEN, safe="")
BASE = "https://api.useapi.net"
VID = "user:1-pixverse:a+b@x.com-video:1"
MB = 1024 * 1024

GENERIC_404 = "The video was deleted, not found, or is still processing."
DELETED_404 = "The original video has been deleted"


# ---------------------------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------------------------


class FakeRaw:
    """A response body stream that counts what the client pulls from it.

    ``size`` without ``body`` streams that many filler bytes lazily, so a "50 MB" body costs
    nothing unless someone actually reads it.
    """

    def __init__(
        self,
        body: bytes = b"",
        *,
        size: int | None = None,
        per_read: int | None = None,
        delay: float = 0.0,
        fail_with: BaseException | None = None,
        fail_after: int = 0,
    ) -> None:
        self._body = body
        self._size = len(body) if size is None else size
        self._per_read = per_read
        self._delay = delay
        self._fail_with = fail_with
        self._fail_after = fail_after
        self.bytes_read = 0
        self.reads = 0
        self.closed = False

    def read(self, amt: int | None = None, **_: Any) -> bytes:
        if self.closed:
            return b""
        self.reads += 1
        if self._fail_with is not None and self.bytes_read >= self._fail_after:
            raise self._fail_with
        if self._delay:
            time.sleep(self._delay)
        n = self._size - self.bytes_read
        if amt is not None:
            n = min(n, amt)
        if self._per_read is not None:
            n = min(n, self._per_read)
        if self._fail_with is not None:
            n = min(n, self._fail_after - self.bytes_read)
        start = self.bytes_read
        self.bytes_read += n
        if self._body:
            return self._body[start : start + n]
        return b"x" * n

    def close(self) -> None:
        self.closed = True


def make_response(
    status: int,
    body: bytes | str | dict[str, Any] | list[Any] = b"",
    *,
    headers: dict[str, str] | None = None,
    raw: FakeRaw | None = None,
) -> requests.Response:
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    response = requests.Response()
    response.status_code = status
    response.headers = CaseInsensitiveDict(headers or {})
    response.raw = raw if raw is not None else FakeRaw(body)
    response.reason = "Fake"
    return response


Reply = requests.Response | BaseException | Callable[[requests.PreparedRequest], Any]


@dataclass
class Sent:
    request: requests.PreparedRequest
    stream: bool
    timeout: Any
    verify: Any


class FakeAdapter(BaseAdapter):
    """Answers each request with the next reply (the last one repeats) and records what was sent."""

    def __init__(self, *replies: Reply) -> None:
        super().__init__()
        self.replies = list(replies)
        self.sent: list[Sent] = []

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        self.sent.append(Sent(request, stream, timeout, verify))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if callable(reply) and not isinstance(reply, requests.Response):
            reply = reply(request)
        if isinstance(reply, BaseException):
            raise reply
        assert isinstance(reply, requests.Response)
        reply.url = request.url or ""
        reply.request = request
        return reply

    def close(self) -> None:
        pass


def client_with(*replies: Reply, **kwargs: Any) -> tuple[UseapiClient, FakeAdapter]:
    adapter = FakeAdapter(*replies)
    session = kwargs.pop("session", None) or requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return UseapiClient(BASE, TOKEN, session=session, **kwargs), adapter


def fetch(reply: Reply, video_id: str = VID, **kwargs: Any) -> Outcome:
    client, _ = client_with(reply, **kwargs)
    return client.fetch(video_id)


def record_for(video_id: str = VID, **fields: Any) -> dict[str, Any]:
    return {"video_id": video_id, "video_status": 1, **fields}


# ---------------------------------------------------------------------------------------------
# video_url
# ---------------------------------------------------------------------------------------------


def test_video_url_keeps_colon_and_at_and_percent_encodes_plus() -> None:
    assert video_url(BASE, VID) == (
        "https://api.useapi.net/v2/pixverse/videos/user:1-pixverse:a%2Bb@x.com-video:1"
    )


def test_video_url_tolerates_a_trailing_slash_on_the_base() -> None:
    assert video_url(BASE + "/", "v:1") == video_url(BASE, "v:1")
    assert video_url(BASE + "/", "v:1") == "https://api.useapi.net/v2/pixverse/videos/v:1"


def test_video_url_leaves_unreserved_characters_alone() -> None:
    unreserved = "AZaz09-._~"
    assert video_url(BASE, unreserved).endswith(VIDEOS_PATH + unreserved)


@pytest.mark.parametrize("video_id", ["", ".", ".."])
def test_video_url_rejects_empty_ids_and_dot_segments(video_id: str) -> None:
    with pytest.raises(ValueError):
        video_url(BASE, video_id)


def test_video_url_rejects_an_id_that_is_not_encodable() -> None:
    with pytest.raises(ValueError):
        video_url(BASE, "video:\udc80")


@pytest.mark.parametrize("video_id", ["", ".", ".."])
def test_fetch_raises_value_error_for_an_id_that_cannot_be_a_path_segment(video_id: str) -> None:
    client, adapter = client_with(make_response(404))
    with pytest.raises(ValueError):
        client.fetch(video_id)
    assert adapter.sent == []


@pytest.mark.parametrize(
    "video_id",
    [
        "a/b",
        "/",
        "../../admin",
        "x/..",
        "./x",
        "..%2F..",
        "%2e%2e",
        "%2F",
        "100%",
        "a?x=1",
        "?",
        "a#frag",
        "#",
        "a b",
        " ",
        "...",
        "a\\..\\b",
        "a\r\nX-Injected: 1",
        "ünïcødé",
        VID,
    ],
)
def test_ids_with_reserved_characters_stay_in_one_path_segment(video_id: str) -> None:
    client, adapter = client_with(lambda _request: make_response(404))
    client.fetch(video_id)
    url = adapter.sent[0].request.url
    assert url is not None
    parts = urlsplit(url)
    assert parts.netloc == "api.useapi.net"
    assert parts.path.startswith(VIDEOS_PATH)
    segment = parts.path[len(VIDEOS_PATH) :]
    assert segment and "/" not in segment
    assert parts.query == "" and parts.fragment == ""
    assert "?" not in url and "#" not in url
    assert unquote(segment) == video_id
    # What urllib3 would put on the wire: no dot-segment normalisation, no re-splitting.
    assert urllib3.util.parse_url(url).path == parts.path


def test_the_prepared_request_path_encodes_plus_and_keeps_colon_and_at() -> None:
    client, adapter = client_with(make_response(404))
    client.fetch(VID)
    assert adapter.sent[0].request.path_url == (
        "/v2/pixverse/videos/user:1-pixverse:a%2Bb@x.com-video:1"
    )


# ---------------------------------------------------------------------------------------------
# What goes on the wire
# ---------------------------------------------------------------------------------------------


def test_request_sends_bearer_token_json_accept_and_user_agent() -> None:
    client, adapter = client_with(make_response(404))
    client.fetch(VID)
    sent = adapter.sent[0].request
    assert sent.method == "GET"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Accept"] == "application/json"
    assert re.fullmatch(r"pixverse-tracker/\S+", sent.headers["User-Agent"])


def test_request_passes_explicit_connect_and_read_timeouts_and_streams() -> None:
    client, adapter = client_with(make_response(404), connect_timeout=2.5, read_timeout=7.0)
    client.fetch(VID)
    assert adapter.sent[0].timeout == (2.5, 7.0)
    assert adapter.sent[0].stream is True


def test_tls_verification_stays_ours_whatever_the_injected_session_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = requests.Session()
    # a session set up elsewhere to trust another CA bundle: its setting must not reach our
    # requests, which always verify against the default trust store
    session.verify = "/etc/ssl/not-the-upstreams-ca.pem"
    client, adapter = client_with(make_response(404), session=session)
    client.fetch(VID)
    assert adapter.sent[0].verify is True


def test_netrc_credentials_do_not_replace_the_bearer_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.useapi.net login someone password netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client, adapter = client_with(make_response(404))
    client.fetch(VID)
    assert adapter.sent[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_transient_not_followed_and_its_body_is_never_read(status: int) -> None:
    raw = FakeRaw(size=50 * MB)
    client, adapter = client_with(
        make_response(status, headers={"Location": "https://evil.example/steal"}, raw=raw)
    )
    outcome = client.fetch(VID)
    assert isinstance(outcome, Transient)
    assert outcome.http_status == status
    assert "redirect" in outcome.reason
    assert len(adapter.sent) == 1
    assert raw.bytes_read == 0
    assert raw.closed


@pytest.mark.parametrize("status", [300, 304])
def test_other_3xx_answers_are_transient_redirects_too(status: int) -> None:
    outcome = fetch(make_response(status))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == status
    assert "redirect" in outcome.reason


def test_redirect_with_a_malformed_location_is_transient() -> None:
    outcome = fetch(make_response(302, headers={"Location": "http://[::1"}))
    assert isinstance(outcome, Transient)
    assert outcome.reason == "malformed response"


# ---------------------------------------------------------------------------------------------
# 200
# ---------------------------------------------------------------------------------------------


def test_matching_record_is_a_record() -> None:
    body = record_for(url="https://media.pixverse.ai/x.mp4", video_status_final=True)
    outcome = fetch(make_response(200, body, headers={"Content-Type": "application/json"}))
    assert isinstance(outcome, Record)
    assert outcome.record == body
    assert outcome.http_status == 200


def test_the_documented_example_record_with_nulls_and_unknown_fields_is_a_record() -> None:
    body = record_for(
        lip_sync=None,
        customer_paths=None,
        original_video_id="user:<userid>-pixverse:<email>-video:66778899",
        queue_data={"queue_time": 1, "queue_count": 0},
        template_i18n_json='{"zh-CN":{"display_name":"疯狂猫女变身"}}',
        brand_new_field={"nested": [1, 2, 3]},
        video_status_name="COMPLETED",
        video_status_final=True,
    )
    outcome = fetch(make_response(200, body))
    assert isinstance(outcome, Record)
    assert outcome.record == body


def test_record_without_video_id_is_a_record() -> None:
    outcome = fetch(make_response(200, {"video_status": 10}))
    assert isinstance(outcome, Record)
    assert outcome.record == {"video_status": 10}


def test_record_with_a_null_video_id_counts_as_missing_and_is_a_record() -> None:
    outcome = fetch(make_response(200, {"video_id": None, "video_status": 10}))
    assert isinstance(outcome, Record)


def test_record_for_another_video_is_transient() -> None:
    other = "user:1-pixverse:a+b@x.com-video:2"
    outcome = fetch(make_response(200, record_for(other)))
    assert isinstance(outcome, Transient)
    assert "another video" in outcome.reason
    assert outcome.detail == {"got": other}
    assert outcome.http_status == 200


def test_record_whose_video_id_is_a_number_is_for_another_video() -> None:
    outcome = fetch(make_response(200, {"video_id": 112233}))
    assert isinstance(outcome, Transient)
    assert "another video" in outcome.reason
    assert outcome.detail == {"got": 112233}


@pytest.mark.parametrize("content_type", ["text/html", "text/plain", "application/octet-stream"])
def test_wrong_content_type_with_a_json_object_body_is_accepted(content_type: str) -> None:
    outcome = fetch(make_response(200, record_for(), headers={"Content-Type": content_type}))
    assert isinstance(outcome, Record)


def test_record_body_with_a_utf8_bom_is_accepted() -> None:
    outcome = fetch(make_response(200, b"\xef\xbb\xbf" + json.dumps(record_for()).encode()))
    assert isinstance(outcome, Record)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"not json", "not valid JSON"),
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (b'{"video_id": "user:1-pixverse:a+b@x.com-vid', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (f'{{"video_id": "{VID}", "seed": NaN}}'.encode(), "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b'"text"', "not an object"),
        (b"42", "not an object"),
        (b"null", "not an object"),
        (b"true", "not an object"),
        (b'{"error": "boom"}', "holds an error"),
        (b'{"error": "boom", "code": 500}', "holds an error"),
    ],
)
def test_200_without_a_usable_json_object_is_transient(body: bytes, reason: str) -> None:
    outcome = fetch(make_response(200, body))
    assert isinstance(outcome, Transient)
    assert reason in outcome.reason
    assert outcome.http_status == 200


def test_200_error_only_body_keeps_the_upstream_message_in_detail() -> None:
    outcome = fetch(make_response(200, {"error": "Something broke", "code": 500}))
    assert isinstance(outcome, Transient)
    assert outcome.detail == {"message": "Something broke"}


# ---------------------------------------------------------------------------------------------
# 404
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"error": DELETED_404},
        {"error": DELETED_404, "code": 404},
        DELETED_404,
        DELETED_404.upper(),
        "Video HAS BEEN DELETED by its owner",
    ],
)
def test_404_saying_has_been_deleted_is_deleted(body: str | dict[str, Any]) -> None:
    outcome = fetch(make_response(404, body))
    assert isinstance(outcome, Deleted)
    assert "deleted" in outcome.message.lower()
    assert outcome.http_status == 404


def test_deleted_404_carries_the_upstream_message() -> None:
    outcome = fetch(make_response(404, {"error": DELETED_404}))
    assert outcome == Deleted(message=DELETED_404, latency=outcome.latency)


@pytest.mark.parametrize(
    "body",
    [
        {"error": GENERIC_404},
        {"error": GENERIC_404, "code": 404},
        GENERIC_404,
        {"error": "Not found", "code": 404},
        "deleted",
        "<html><body>Not Found</body></html>",
    ],
)
def test_generic_404_text_mentioning_deleted_is_not_yet(body: str | dict[str, Any]) -> None:
    outcome = fetch(make_response(404, body))
    assert isinstance(outcome, NotYet)
    assert outcome.http_status == 404


def test_generic_404_keeps_the_error_field_as_its_message() -> None:
    outcome = fetch(make_response(404, {"error": GENERIC_404, "code": 404}))
    assert isinstance(outcome, NotYet)
    assert outcome.message == GENERIC_404


def test_404_with_an_empty_body_is_not_yet_with_no_message() -> None:
    outcome = fetch(make_response(404))
    assert isinstance(outcome, NotYet)
    assert outcome.message == ""


def test_404_whose_body_cannot_be_read_is_transient_not_a_guess() -> None:
    raw = FakeRaw(size=10 * MB)
    outcome = fetch(make_response(404, raw=raw), max_body_bytes=1024)
    assert isinstance(outcome, Transient)
    assert outcome.http_status == 404
    assert "body too large" in outcome.reason


# ---------------------------------------------------------------------------------------------
# Other statuses
# ---------------------------------------------------------------------------------------------


def test_400_is_rejected_with_the_upstream_error() -> None:
    outcome = fetch(make_response(400, {"error": "Parameter video_id is invalid", "code": 400}))
    assert outcome == Rejected(message="Parameter video_id is invalid", latency=outcome.latency)


def test_400_with_a_plain_text_body_is_rejected_with_that_text() -> None:
    outcome = fetch(make_response(400, "Bad Request\n"))
    assert isinstance(outcome, Rejected)
    assert outcome.message == "Bad Request"


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_unauthorized(status: int) -> None:
    outcome = fetch(make_response(status, {"error": "Unauthorized", "code": status}))
    assert isinstance(outcome, Unauthorized)
    assert outcome.message == "Unauthorized"
    assert outcome.http_status == status


def test_429_with_retry_after_seconds_is_rate_limited_for_that_long() -> None:
    outcome = fetch(make_response(429, {"error": "Too many"}, headers={"Retry-After": "17"}))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after == 17.0
    assert outcome.message == "Too many"
    assert outcome.http_status == 429


def test_429_with_retry_after_http_date_is_rate_limited_until_then() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    outcome = fetch(make_response(429, headers={"Retry-After": when}))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after is not None
    assert 25.0 <= outcome.retry_after <= 30.0


@pytest.mark.parametrize("headers", [{}, {"Retry-After": "soon"}, {"Retry-After": "-3"}])
def test_429_without_a_usable_retry_after_has_none(headers: dict[str, str]) -> None:
    outcome = fetch(make_response(429, headers=headers))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after is None


def test_429_with_an_unreadable_body_is_still_rate_limited() -> None:
    raw = FakeRaw(size=10 * MB)
    outcome = fetch(make_response(429, headers={"Retry-After": "5"}, raw=raw), max_body_bytes=64)
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after == 5.0
    assert outcome.message == ""


@pytest.mark.parametrize(
    "status", [201, 204, 206, 405, 408, 410, 412, 418, 422, 425, 500, 502, 503, 504, 520, 596, 599]
)
def test_retryable_and_unexpected_statuses_are_transient(status: int) -> None:
    outcome = fetch(make_response(status, {"error": "nope"}))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == status
    assert str(status) in outcome.reason
    assert outcome.detail.get("message") == "nope"


@pytest.mark.parametrize(
    ("status", "label"),
    [(408, "request timeout"), (412, "out of credits"), (596, "on hold"), (503, "server error")],
)
def test_transient_statuses_name_what_they_mean(status: int, label: str) -> None:
    outcome = fetch(make_response(status))
    assert isinstance(outcome, Transient)
    assert label in outcome.reason


def test_503_passes_its_retry_after_on_in_the_detail() -> None:
    outcome = fetch(make_response(503, headers={"Retry-After": "12"}))
    assert isinstance(outcome, Transient)
    assert outcome.detail["retry_after"] == 12.0


# ---------------------------------------------------------------------------------------------
# Transport failures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (requests.exceptions.ConnectTimeout("connect timed out"), "connect timeout"),
        (requests.exceptions.ReadTimeout("read timed out"), "read timeout"),
        (requests.exceptions.Timeout("timed out"), "timeout"),
        (requests.exceptions.SSLError("certificate verify failed"), "TLS error"),
        (requests.exceptions.ProxyError("proxy said no"), "proxy error"),
        (
            requests.exceptions.ConnectionError(
                urllib3.exceptions.ProtocolError(
                    "Connection aborted.", ConnectionRefusedError(111, "Connection refused")
                )
            ),
            "connection refused",
        ),
        (
            requests.exceptions.ConnectionError(
                urllib3.exceptions.ProtocolError(
                    "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")
                )
            ),
            "connection reset",
        ),
        (requests.exceptions.ConnectionError("something"), "connection error"),
        (requests.exceptions.ChunkedEncodingError("bad chunk"), "broken chunked encoding"),
        (requests.exceptions.ContentDecodingError("bad gzip"), "content decoding error"),
        (requests.exceptions.TooManyRedirects("loop"), "too many redirects"),
        (requests.exceptions.InvalidHeader("bad header"), "invalid header"),
        (requests.exceptions.RequestException("anything else"), "request failed"),
        (urllib3.exceptions.ProtocolError("leaked from urllib3"), "connection error"),
        (OSError("network is unreachable"), "network error"),
    ],
)
def test_transport_failures_are_transient_and_say_what_kind(
    error: BaseException, reason: str
) -> None:
    outcome = fetch(error)
    assert isinstance(outcome, Transient)
    assert outcome.reason == reason
    assert outcome.http_status is None
    assert outcome.detail["exception"] == type(error).__name__


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out."), "read timeout"),  # type: ignore[arg-type]
        (
            urllib3.exceptions.ProtocolError(
                "Connection broken", ConnectionResetError(104, "Connection reset by peer")
            ),
            "connection reset",
        ),
        (urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"), "connection error"),
        (urllib3.exceptions.SSLError("bad record mac"), "TLS error"),
        (urllib3.exceptions.DecodeError("bad gzip"), "content decoding error"),
        (requests.exceptions.ChunkedEncodingError("bad chunk"), "broken chunked encoding"),
        (OSError("boom"), "network error"),
    ],
)
def test_failures_while_reading_a_200_body_are_transient(error: BaseException, reason: str) -> None:
    raw = FakeRaw(json.dumps(record_for()).encode(), per_read=5, fail_with=error, fail_after=10)
    outcome = fetch(make_response(200, raw=raw))
    assert isinstance(outcome, Transient)
    assert outcome.reason == f"{reason} while reading the body"
    assert outcome.http_status == 200
    assert raw.closed


def test_failure_while_reading_a_404_body_is_transient() -> None:
    raw = FakeRaw(
        DELETED_404.encode(), fail_with=urllib3.exceptions.ProtocolError("broken"), fail_after=4
    )
    outcome = fetch(make_response(404, raw=raw))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == 404
    assert "while reading the body" in outcome.reason


# ---------------------------------------------------------------------------------------------
# Body size and time limits
# ---------------------------------------------------------------------------------------------


def test_a_50_mb_body_stops_being_read_just_past_the_cap_and_the_stream_is_closed() -> None:
    raw = FakeRaw(size=50 * MB)
    started = time.monotonic()
    outcome = fetch(make_response(200, raw=raw), max_body_bytes=MB)
    assert isinstance(outcome, Transient)
    assert "body too large" in outcome.reason
    assert outcome.http_status == 200
    assert raw.bytes_read <= MB + 1
    assert raw.closed
    assert time.monotonic() - started < 2.0


def test_a_declared_content_length_over_the_cap_reads_nothing() -> None:
    raw = FakeRaw(size=50 * MB)
    headers = {"Content-Length": str(50 * MB)}
    outcome = fetch(make_response(200, headers=headers, raw=raw), max_body_bytes=MB)
    assert isinstance(outcome, Transient)
    assert "body too large" in outcome.reason
    assert raw.bytes_read == 0
    assert raw.closed


@pytest.mark.parametrize("content_length", ["", "abc", "²", "1" * 5000, "10, 10"])
def test_an_unusable_content_length_header_does_not_break_reading(content_length: str) -> None:
    body = json.dumps(record_for()).encode()
    outcome = fetch(make_response(200, body, headers={"Content-Length": content_length}))
    # A 5000-digit length is over any cap; the rest just fall back to reading under the cap.
    assert isinstance(outcome, Transient if len(content_length) > 100 else Record)


def test_a_body_exactly_at_the_cap_is_read_and_one_byte_more_is_not() -> None:
    body = json.dumps(record_for()).encode()
    assert isinstance(fetch(make_response(200, body), max_body_bytes=len(body)), Record)
    over = fetch(make_response(200, body), max_body_bytes=len(body) - 1)
    assert isinstance(over, Transient)
    assert "body too large" in over.reason


def test_a_slow_drip_body_is_cut_off_at_the_overall_deadline() -> None:
    body = json.dumps(record_for(prompt="p" * 1000)).encode()
    raw = FakeRaw(body, per_read=1, delay=0.01)
    started = time.monotonic()
    outcome = fetch(make_response(200, raw=raw), connect_timeout=0.05, read_timeout=0.05)
    assert isinstance(outcome, Transient)
    assert "deadline" in outcome.reason
    assert raw.bytes_read < len(body)
    assert raw.closed
    assert time.monotonic() - started < 1.0


# ---------------------------------------------------------------------------------------------
# Messages, secrets and latency
# ---------------------------------------------------------------------------------------------


def test_long_upstream_messages_are_truncated() -> None:
    for status in (400, 401, 404, 429):
        outcome = fetch(make_response(status, {"error": "x" * 100_000}))
        assert isinstance(outcome, (Rejected, Unauthorized, NotYet, RateLimited))
        assert 0 < len(outcome.message) <= MAX_MESSAGE_CHARS
    transient = fetch(make_response(503, "y" * 100_000))
    assert isinstance(transient, Transient)
    assert len(transient.detail["message"]) <= MAX_MESSAGE_CHARS


def test_upstream_messages_are_flattened_to_one_printable_line() -> None:
    outcome = fetch(make_response(400, {"error": "line one\r\n\tline two\x00\x1b[31m"}))
    assert isinstance(outcome, Rejected)
    assert outcome.message == "line one line two [31m"


def _echoes(token: str) -> list[Reply]:
    """Answers in which a careless upstream reflects the token back at us."""
    return [
        make_response(400, {"error": f"bad token {token}"}),
        make_response(401, {"error": f"Unauthorized: Bearer {token}", "code": 401}),
        make_response(403, f"Forbidden for {token}"),
        make_response(404, {"error": f"{GENERIC_404} ({token})"}),
        make_response(404, f"{DELETED_404}; token={token}"),
        make_response(429, {"error": f"slow down {token}"}),
        make_response(503, f"upstream down for {token}"),
        make_response(200, {"error": f"token {token} rejected"}),
        make_response(200, {"video_id": f"video-of-{token}"}),
        make_response(200, {"video_id": {"nested": token}}),
        # Its own record, echoing it in a value, a key and deep inside (issue 11): scrubbed.
        make_response(200, record_for(prompt=f"a cat {token}", debug={f"k-{token}": [[token]]})),
        make_response(200, f"not json {token}"),
        make_response(200, "x" * 490 + token),  # the token straddles the truncation point
        requests.exceptions.ConnectionError(f"failed with header Bearer {token}"),
        make_response(
            200,
            raw=FakeRaw(
                b"{}", fail_with=urllib3.exceptions.ProtocolError(f"broke at {token}"), fail_after=1
            ),
        ),
    ]


@pytest.mark.parametrize("token_form", ["plain", "percent-encoded"])
def test_repr_and_every_outcome_never_contain_the_token(token_form: str) -> None:
    echoed = TOKEN if token_form == "plain" else ENCODED_TOKEN
    for reply in _echoes(echoed):
        client, _ = client_with(reply)
        outcome = client.fetch(VID)
        assert TOKEN not in repr(outcome), outcome
        assert ENCODED_TOKEN not in repr(outcome), outcome
        assert TOKEN not in json.dumps(outcome.__dict__, default=str)
        assert TOKEN not in repr(client)


def test_a_record_that_echoes_the_token_keeps_everything_else_with_redacted_in_its_place() -> None:
    echoed = record_for(
        prompt=f"a cat {TOKEN}", url=f"https://m.example/v.mp4?t={ENCODED_TOKEN}", n=3
    )
    outcome = fetch(make_response(200, echoed))
    assert isinstance(outcome, Record)
    assert outcome.record == {
        **echoed,
        "prompt": "a cat [redacted]",
        "url": "https://m.example/v.mp4?t=[redacted]",
    }


def test_scrubbed_messages_say_where_the_token_was() -> None:
    outcome = fetch(make_response(401, {"error": f"Unauthorized: Bearer {TOKEN}"}))
    assert isinstance(outcome, Unauthorized)
    assert outcome.message == "Unauthorized: Bearer [redacted]"


def test_repr_shows_base_url_and_timeouts_but_not_the_token() -> None:
    client = UseapiClient(BASE + "/", TOKEN, connect_timeout=3.0, read_timeout=9.0)
    text = repr(client)
    assert "https://api.useapi.net" in text
    assert "3.0" in text and "9.0" in text
    assert TOKEN not in text
    assert TOKEN not in repr(vars(client))
    client.close()


@pytest.mark.parametrize(
    "reply",
    [
        lambda _r: make_response(200, record_for()),
        lambda _r: make_response(404, {"error": GENERIC_404}),
        lambda _r: make_response(404, {"error": DELETED_404}),
        lambda _r: make_response(400, {"error": "bad"}),
        lambda _r: make_response(401),
        lambda _r: make_response(429),
        lambda _r: make_response(502),
        lambda _r: requests.exceptions.ReadTimeout("slow"),
    ],
)
def test_every_outcome_carries_the_request_latency(
    reply: Callable[[requests.PreparedRequest], Any],
) -> None:
    def slow(request: requests.PreparedRequest) -> Any:
        time.sleep(0.02)
        return reply(request)

    outcome = fetch(slow)
    assert 0.02 <= outcome.latency < 1.0


# ---------------------------------------------------------------------------------------------
# parse_retry_after
# ---------------------------------------------------------------------------------------------

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 7 ", 7.0),
        ("3600", 3600.0),
        ("3601", MAX_RETRY_AFTER),
        ("9" * 500, MAX_RETRY_AFTER),
    ],
)
def test_retry_after_delta_seconds_are_read_and_clamped(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wed, 01 Jan 2025 12:00:30 GMT", 30.0),
        ("Wednesday, 01-Jan-25 12:00:30 GMT", 30.0),
        ("Wed Jan  1 12:00:30 2025", 30.0),
        ("Wed, 01 Jan 2025 12:00:30 -0000", 30.0),
        ("Wed, 01 Jan 2025 13:00:30 +0100", 30.0),
        ("Tue, 31 Dec 2024 12:00:00 GMT", 0.0),
        ("Fri, 01 Jan 2100 00:00:00 GMT", MAX_RETRY_AFTER),
    ],
)
def test_retry_after_http_dates_become_seconds_from_now(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_with_a_naive_now_treats_it_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", naive) == 30.0


def test_retry_after_defaults_now_to_the_current_time() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    result = parse_retry_after(when)
    assert result is not None and 55.0 <= result <= 60.0


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-5", "+5", "1e3", "inf", "nan", "1,5", "0x10", "12 seconds", "٣"],
)
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# ---------------------------------------------------------------------------------------------
# Construction and lifecycle
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "api.useapi.net"},
        {"base_url": "ftp://api.useapi.net"},
        {"base_url": "https://"},
        {"base_url": "https://api.useapi.net/?q=1"},
        {"base_url": "https://api.useapi.net/#top"},
        {"token": ""},
        {"token": "has space"},
        {"token": "tok\n"},
        {"token": "tøk"},
        {"connect_timeout": 0},
        {"connect_timeout": -1.0},
        {"connect_timeout": float("inf")},
        {"read_timeout": float("nan")},
        {"read_timeout": 0},
        {"max_body_bytes": 0},
    ],
)
def test_constructor_rejects_unusable_configuration(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"base_url": BASE, "token": TOKEN, **kwargs}
    with pytest.raises(ValueError):
        UseapiClient(**arguments)


def test_a_rejected_token_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ValueError) as caught:
        UseapiClient(BASE, "secret with space")
    assert "secret" not in str(caught.value)


def test_context_manager_closes_the_session_the_client_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[requests.Session] = []
    monkeypatch.setattr(requests.Session, "close", lambda self: closed.append(self))
    with UseapiClient(BASE, TOKEN):
        assert closed == []
    assert len(closed) == 1


def test_an_injected_session_is_left_open_for_its_owner() -> None:
    class TrackingSession(requests.Session):
        closed = False

        def close(self) -> None:
            self.closed = True
            super().close()

    session = TrackingSession()
    with UseapiClient(BASE, TOKEN, session=session):
        pass
    assert session.closed is False


def test_one_client_fetches_many_ids_through_one_session() -> None:
    client, adapter = client_with(
        make_response(404, {"error": GENERIC_404}),
        make_response(200, record_for("user:1-pixverse:a+b@x.com-video:2")),
        make_response(200, record_for()),
    )
    outcomes = [client.fetch(VID), client.fetch("user:1-pixverse:a+b@x.com-video:2")]
    outcomes.append(client.fetch(VID))
    assert [type(o) for o in outcomes] == [NotYet, Record, Record]
    assert len(adapter.sent) == 3

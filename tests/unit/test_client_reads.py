"""What the client's two reads of videos share, tested once for each: ``fetch`` (one video by id)
and ``list_videos`` (an account's page). Both go through the same transport: the request on the
wire, redirects, transport failures, body limits, statuses that mean the same for both, and the
token that must never come back out. What only one of them does is in test_client.py and
test_client_list.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from pixverse_tracker.rules.outcomes import (
    NotYet,
    RateLimited,
    Rejected,
    Transient,
    Unauthorized,
)
from pixverse_tracker.upstream.bodies import MAX_MESSAGE_CHARS
from tests.unit.conftest import (
    DELETED_404,
    ENCODED_TOKEN,
    GENERIC_404,
    MB,
    TOKEN,
    Endpoint,
    FakeRaw,
    Reply,
    client_with,
    echoing_errors,
    echoing_transport,
    list_entry,
    make_response,
    record_for,
)

# ---------------------------------------------------------------------------------------------
# What goes on the wire
# ---------------------------------------------------------------------------------------------


def test_a_read_sends_bearer_token_json_accept_and_user_agent(endpoint: Endpoint) -> None:
    client, adapter = client_with(make_response(200, endpoint.answer()))
    endpoint.read(client)
    sent = adapter.sent[0].request
    assert sent.method == "GET"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Accept"] == "application/json"
    assert re.fullmatch(r"pixverse-tracker/\S+", sent.headers["User-Agent"])


def test_a_read_passes_explicit_connect_and_read_timeouts_and_streams(endpoint: Endpoint) -> None:
    client, adapter = client_with(
        make_response(200, endpoint.answer()), connect_timeout=2.5, read_timeout=7.0
    )
    endpoint.read(client)
    assert adapter.sent[0].timeout == (2.5, 7.0)
    assert adapter.sent[0].stream is True


def test_tls_verification_stays_ours_whatever_the_injected_session_sets(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = requests.Session()
    # a session set up elsewhere to trust another CA bundle: its setting must not reach our
    # requests, which always verify against the default trust store
    session.verify = "/etc/ssl/not-the-upstreams-ca.pem"
    client, adapter = client_with(make_response(200, endpoint.answer()), session=session)
    endpoint.read(client)
    assert adapter.sent[0].verify is True


def test_netrc_credentials_do_not_replace_the_bearer_token(
    endpoint: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.useapi.net login someone password netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client, adapter = client_with(make_response(200, endpoint.answer()))
    endpoint.read(client)
    assert adapter.sent[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_transient_not_followed_and_its_body_is_never_read(
    endpoint: Endpoint, status: int
) -> None:
    raw = FakeRaw(size=50 * MB)
    client, adapter = client_with(
        make_response(status, headers={"Location": "https://evil.example/steal"}, raw=raw)
    )
    outcome = endpoint.read(client)
    assert isinstance(outcome, Transient)
    assert outcome.http_status == status
    assert "redirect" in outcome.reason
    assert len(adapter.sent) == 1
    assert raw.bytes_read == 0
    assert raw.closed


@pytest.mark.parametrize("status", [300, 304])
def test_other_3xx_answers_are_transient_redirects_too(endpoint: Endpoint, status: int) -> None:
    outcome = endpoint.outcome(make_response(status))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == status
    assert "redirect" in outcome.reason


def test_redirect_with_a_malformed_location_is_transient(endpoint: Endpoint) -> None:
    outcome = endpoint.outcome(make_response(302, headers={"Location": "http://[::1"}))
    assert isinstance(outcome, Transient)
    assert outcome.reason == "malformed response"


# ---------------------------------------------------------------------------------------------
# 200: how the body is read
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/html", "text/plain", "application/octet-stream"])
def test_wrong_content_type_with_a_json_body_is_accepted(
    endpoint: Endpoint, content_type: str
) -> None:
    reply = make_response(200, endpoint.answer(), headers={"Content-Type": content_type})
    assert isinstance(endpoint.outcome(reply), endpoint.answer_type)


# ---------------------------------------------------------------------------------------------
# Statuses that mean the same for both reads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_unauthorized(endpoint: Endpoint, status: int) -> None:
    outcome = endpoint.outcome(make_response(status, {"error": "Unauthorized", "code": status}))
    assert outcome == Unauthorized(
        message="Unauthorized", http_status=status, latency=outcome.latency
    )


def test_429_with_retry_after_seconds_is_rate_limited_for_that_long(endpoint: Endpoint) -> None:
    reply = make_response(429, {"error": "Too many"}, headers={"Retry-After": "17"})
    outcome = endpoint.outcome(reply)
    assert outcome == RateLimited(retry_after=17.0, message="Too many", latency=outcome.latency)
    assert outcome.http_status == 429


def test_429_with_retry_after_http_date_is_rate_limited_until_then(endpoint: Endpoint) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    outcome = endpoint.outcome(make_response(429, headers={"Retry-After": when}))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after is not None
    assert 25.0 <= outcome.retry_after <= 30.0


@pytest.mark.parametrize("headers", [{}, {"Retry-After": "soon"}, {"Retry-After": "-3"}])
def test_429_without_a_usable_retry_after_leaves_the_wait_to_the_caller(
    endpoint: Endpoint, headers: dict[str, str]
) -> None:
    outcome = endpoint.outcome(make_response(429, headers=headers))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after is None


@pytest.mark.parametrize(
    "status", [201, 204, 206, 405, 408, 410, 412, 418, 422, 425, 500, 502, 503, 504, 520, 596, 599]
)
def test_retryable_and_unexpected_statuses_are_transient(endpoint: Endpoint, status: int) -> None:
    outcome = endpoint.outcome(make_response(status, {"error": "nope"}))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == status
    assert str(status) in outcome.reason
    assert outcome.detail.get("message") == "nope"


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (408, "request timeout"),
        (412, "out of credits"),
        (596, "on hold"),
        (500, "server error"),
        (502, "server error"),
        (503, "server error"),
        (201, "unexpected status"),
        (410, "unexpected status"),
    ],
)
def test_transient_statuses_name_what_they_mean(
    endpoint: Endpoint, status: int, label: str
) -> None:
    bare = endpoint.outcome(make_response(status))
    assert isinstance(bare, Transient)
    assert label in bare.reason
    outcome = endpoint.outcome(make_response(status, {"error": "nope"}))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == status
    assert label in outcome.reason
    assert outcome.detail.get("message") == "nope"


def test_a_503_html_page_is_transient_and_passes_its_retry_after_on(endpoint: Endpoint) -> None:
    html = "<html><head><title>503 Service Unavailable</title></head>\n<body>busy</body></html>"
    reply = make_response(503, html, headers={"Content-Type": "text/html", "Retry-After": "12"})
    outcome = endpoint.outcome(reply)
    assert isinstance(outcome, Transient)
    assert outcome.reason == "HTTP 503: server error"
    assert outcome.http_status == 503
    assert outcome.detail["retry_after"] == 12.0
    assert "503 Service Unavailable" in outcome.detail["message"]


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
    endpoint: Endpoint, error: BaseException, reason: str
) -> None:
    outcome = endpoint.outcome(error)
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
def test_failures_while_reading_a_200_body_are_transient(
    endpoint: Endpoint, error: BaseException, reason: str
) -> None:
    body = json.dumps(endpoint.answer()).encode()
    raw = FakeRaw(body, per_read=5, fail_with=error, fail_after=10)
    outcome = endpoint.outcome(make_response(200, raw=raw))
    assert isinstance(outcome, Transient)
    assert outcome.reason == f"{reason} while reading the body"
    assert outcome.http_status == 200
    assert raw.closed


# ---------------------------------------------------------------------------------------------
# Body size and time limits
# ---------------------------------------------------------------------------------------------


def test_a_50_mb_body_stops_being_read_just_past_the_cap_and_the_stream_is_closed(
    endpoint: Endpoint,
) -> None:
    raw = FakeRaw(size=50 * MB)
    started = time.monotonic()
    outcome = endpoint.outcome(make_response(200, raw=raw), max_body_bytes=MB)
    assert isinstance(outcome, Transient)
    assert "body too large" in outcome.reason
    assert outcome.http_status == 200
    assert raw.bytes_read <= MB + 1
    assert raw.closed
    assert time.monotonic() - started < 2.0


def test_a_declared_content_length_over_the_cap_reads_nothing(endpoint: Endpoint) -> None:
    raw = FakeRaw(size=50 * MB)
    headers = {"Content-Length": str(50 * MB)}
    outcome = endpoint.outcome(make_response(200, headers=headers, raw=raw), max_body_bytes=MB)
    assert isinstance(outcome, Transient)
    assert "body too large" in outcome.reason
    assert raw.bytes_read == 0
    assert raw.closed


@pytest.mark.parametrize("content_length", ["", "abc", "²", "1" * 5000, "10, 10"])
def test_an_unusable_content_length_header_does_not_break_reading(
    endpoint: Endpoint, content_length: str
) -> None:
    body = json.dumps(endpoint.answer()).encode()
    outcome = endpoint.outcome(make_response(200, body, headers={"Content-Length": content_length}))
    # A 5000-digit length is over any cap; the rest just fall back to reading under the cap.
    assert isinstance(outcome, Transient if len(content_length) > 100 else endpoint.answer_type)


def test_a_body_exactly_at_the_cap_is_read_and_one_byte_more_is_not(endpoint: Endpoint) -> None:
    body = json.dumps(endpoint.answer()).encode()
    at_cap = endpoint.outcome(make_response(200, body), max_body_bytes=len(body))
    assert isinstance(at_cap, endpoint.answer_type)
    over = endpoint.outcome(make_response(200, body), max_body_bytes=len(body) - 1)
    assert isinstance(over, Transient)
    assert "body too large" in over.reason


def test_a_slow_drip_body_is_cut_off_at_the_overall_deadline(endpoint: Endpoint) -> None:
    body = json.dumps(endpoint.long_answer()).encode()
    raw = FakeRaw(body, per_read=1, delay=0.01)
    started = time.monotonic()
    outcome = endpoint.outcome(make_response(200, raw=raw), connect_timeout=0.05, read_timeout=0.05)
    assert isinstance(outcome, Transient)
    assert "deadline" in outcome.reason
    assert raw.bytes_read < len(body)
    assert raw.closed
    assert time.monotonic() - started < 1.0


# ---------------------------------------------------------------------------------------------
# Messages, secrets and latency
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 404, 429])
def test_long_upstream_messages_are_truncated(endpoint: Endpoint, status: int) -> None:
    outcome = endpoint.outcome(make_response(status, {"error": "x" * 100_000}))
    assert isinstance(outcome, (Rejected, Unauthorized, NotYet, RateLimited))
    assert 0 < len(outcome.message) <= MAX_MESSAGE_CHARS


def test_a_long_server_error_page_is_truncated_in_the_detail(endpoint: Endpoint) -> None:
    transient = endpoint.outcome(make_response(503, "y" * 100_000))
    assert isinstance(transient, Transient)
    assert len(transient.detail["message"]) <= MAX_MESSAGE_CHARS


def test_upstream_messages_are_flattened_to_one_printable_line(endpoint: Endpoint) -> None:
    outcome = endpoint.outcome(make_response(400, {"error": "line one\r\n\tline two\x00\x1b[31m"}))
    assert isinstance(outcome, Rejected)
    assert outcome.message == "line one line two [31m"


def _echoes_by_id(token: str) -> list[Reply]:
    """Answers about one video in which a careless upstream reflects the token back at us."""
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


def _echoes_in_lists(token: str) -> list[Reply]:
    """List answers in which a careless upstream reflects the token back at us."""
    return [
        *echoing_errors(token, "list"),
        make_response(200, {"data": {"token": token}}),
        # Dropped items are not kept, so whatever they echo goes nowhere.
        make_response(200, {"data": [{"video_id": 5, "note": token}, token, list_entry(1)]}),
        # Kept entries that echo it, in a value, a key and deep inside (issue 11): scrubbed.
        make_response(
            200,
            {
                "data": [
                    list_entry(2, prompt=f"a cat {token}", debug={f"k-{token}": [[{"t": token}]]})
                ]
            },
        ),
        *echoing_transport(token, b'{"data": []}'),
    ]


ECHOES: dict[str, Callable[[str], list[Reply]]] = {
    "by-id": _echoes_by_id,
    "list": _echoes_in_lists,
}


@pytest.mark.parametrize("token_form", ["plain", "percent-encoded"])
def test_no_outcome_and_no_repr_ever_contains_the_token(
    endpoint: Endpoint, token_form: str
) -> None:
    echoed = TOKEN if token_form == "plain" else ENCODED_TOKEN
    for reply in ECHOES[endpoint.name](echoed):
        client, _ = client_with(reply)
        outcome = endpoint.read(client)
        assert TOKEN not in repr(outcome), outcome
        assert ENCODED_TOKEN not in repr(outcome), outcome
        assert TOKEN not in json.dumps(outcome.__dict__, default=str)
        assert TOKEN not in repr(client)
        assert TOKEN not in repr(vars(client))


REPLIES: dict[str, Callable[[Endpoint], Reply]] = {
    "answer": lambda endpoint: make_response(200, endpoint.answer()),
    "404 generic": lambda _: make_response(404, {"error": GENERIC_404}),
    "404 deleted": lambda _: make_response(404, {"error": DELETED_404}),
    "400": lambda _: make_response(400, {"error": "bad"}),
    "401": lambda _: make_response(401),
    "429": lambda _: make_response(429),
    "502": lambda _: make_response(502),
    "read timeout": lambda _: requests.exceptions.ReadTimeout("slow"),
}


@pytest.mark.parametrize("reply", list(REPLIES))
def test_every_outcome_carries_the_request_latency(endpoint: Endpoint, reply: str) -> None:
    def slow(_request: requests.PreparedRequest) -> Any:
        time.sleep(0.02)
        return REPLIES[reply](endpoint)

    outcome = endpoint.outcome(slow)
    assert 0.02 <= outcome.latency < 1.0

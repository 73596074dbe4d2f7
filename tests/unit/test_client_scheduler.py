"""Unit tests for UseapiClient.scheduler and scheduler_url, driven through the fake transport."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
import urllib3

from pixverse_tracker.rules.outcomes import (
    Executing,
    RateLimited,
    Rejected,
    SchedulerOutcome,
    Transient,
    Unauthorized,
    kind_of,
)
from pixverse_tracker.upstream.bodies import MAX_MESSAGE_CHARS
from pixverse_tracker.upstream.urls import SCHEDULER_PATH, scheduler_url
from tests.unit.conftest import (
    BASE,
    ENCODED_TOKEN,
    MB,
    TOKEN,
    FakeRaw,
    Reply,
    client_with,
    echoing_errors,
    echoing_transport,
    make_response,
)

A = "user:1-pixverse:a+b@x.com-video:1"
B = "user:1-pixverse:c@y.com-image:2"
C = "user:2-pixverse:a+b@x.com-video:3"


def read(reply: Reply, **kwargs: Any) -> SchedulerOutcome:
    client, _ = client_with(reply, **kwargs)
    return client.scheduler()


def item(job_id: str, key: str = "id", **fields: Any) -> dict[str, Any]:
    return {key: job_id, "type": "video", "started": "2024-09-25T01:55:16.128Z", **fields}


def executing(outcome: SchedulerOutcome) -> Executing:
    assert isinstance(outcome, Executing), outcome
    return outcome


# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------


def test_scheduler_url_is_the_token_wide_path_under_the_base() -> None:
    assert scheduler_url(BASE) == "https://api.useapi.net/v2/pixverse/scheduler/"
    assert scheduler_url(BASE + "/") == scheduler_url(BASE)
    assert SCHEDULER_PATH == "/v2/pixverse/scheduler/"


def test_the_scheduler_read_is_one_bearer_get_with_timeouts_streamed_and_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A CA bundle in the environment would show as the verify value instead of True.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    client, adapter = client_with(make_response(200, []), connect_timeout=2, read_timeout=7)
    client.scheduler()
    assert len(adapter.sent) == 1
    sent = adapter.sent[0]
    assert sent.request.method == "GET"
    assert sent.request.path_url == "/v2/pixverse/scheduler/"
    assert sent.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.request.headers["Accept"] == "application/json"
    assert sent.timeout == (2.0, 7.0)
    assert sent.stream is True
    assert sent.verify is True


# ---------------------------------------------------------------------------------------------
# 200: the shapes of the answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["id", "videoId", "video_id"])
def test_an_array_of_items_gives_their_ids_in_order_whatever_the_ids_field_is_named(
    key: str,
) -> None:
    body = [item(A, key, elapsed="03:57", replyUrl="https://x/cb"), item(B, key, type="image")]
    outcome = executing(read(make_response(200, body)))
    assert outcome == Executing(ids=(A, B), dropped=0, latency=outcome.latency)
    assert kind_of(outcome) == "scheduler"


def test_items_of_the_different_forms_can_be_mixed_in_one_answer() -> None:
    body = [item(A), item(B, "videoId"), item(C, "video_id")]
    assert executing(read(make_response(200, body))).ids == (A, B, C)


def test_bare_strings_are_ids_too() -> None:
    assert executing(read(make_response(200, [A, item(B)]))).ids == (A, B)


def test_the_first_string_field_among_id_video_id_forms_decides() -> None:
    body = [
        {"id": A, "videoId": B, "video_id": C},
        {"id": 7, "videoId": B},  # not a string: the next form is read
        {"id": None, "video_id": C},
        {"id": "", "videoId": A},  # an empty id is not usable, and not replaced by a guess
    ]
    outcome = executing(read(make_response(200, body)))
    assert outcome.ids == (A, B, C)
    assert outcome.dropped == 1


def test_ids_are_kept_exactly_as_sent() -> None:
    odd = "  user:1-pixverse:A@X.com-video:9 \t"
    assert executing(read(make_response(200, [item(odd)]))).ids == (odd,)


def test_items_without_a_usable_id_are_counted_as_dropped() -> None:
    body = [
        item(A),
        {"type": "video", "elapsed": "00:01"},
        {"id": 12345},
        {"id": ["x"]},
        "",
        7,
        None,
        [A],
        {},
        item(B),
    ]
    outcome = executing(read(make_response(200, body)))
    assert outcome.ids == (A, B)
    assert outcome.dropped == 8


def test_a_repeated_id_is_listed_once_at_its_first_place_and_not_dropped() -> None:
    body = [item(A), item(B), item(A, "videoId"), B]
    outcome = executing(read(make_response(200, body)))
    assert outcome.ids == (A, B)
    assert outcome.dropped == 0


def test_an_empty_array_is_a_valid_answer_with_nothing_executing() -> None:
    outcome = executing(read(make_response(200, [])))
    assert outcome.ids == ()
    assert outcome.dropped == 0
    assert outcome.http_status == 200


def test_the_available_shape_gives_the_ids_under_executing() -> None:
    body = {
        "executing": [item(A, "video_id"), item(B, "video_id")],
        "available": [{"email": "a+b@x.com", "maxJobs": 10, "executing": 2, "available": 8}],
    }
    assert executing(read(make_response(200, body))).ids == (A, B)


def test_the_available_shape_with_nothing_executing_is_an_empty_answer() -> None:
    body = {"executing": [], "available": []}
    assert executing(read(make_response(200, body))).ids == ()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "scheduler answer is not valid JSON"),
        (b"", "scheduler answer is not valid JSON"),
        (b"[1, 2", "scheduler answer is not valid JSON"),
        (b"[NaN]", "scheduler answer is not valid JSON"),
        (b'"ok"', "scheduler answer is not a list"),
        (b"42", "scheduler answer is not a list"),
        (b"null", "scheduler answer is not a list"),
        (b"true", "scheduler answer is not a list"),
        (b'{"unexpected": true}', "scheduler answer has no executing list"),
        (b'{"executing": {"id": "x"}}', "scheduler answer has no executing list"),
        (b'{"executing": null}', "scheduler answer has no executing list"),
        (b'{"data": []}', "scheduler answer has no executing list"),
        (b'{"error": "busy", "code": 500}', "scheduler answer holds an error, not a list"),
    ],
)
def test_a_200_that_is_not_a_list_of_jobs_is_transient_and_says_why(
    body: bytes, reason: str
) -> None:
    outcome = read(make_response(200, body))
    assert isinstance(outcome, Transient)
    assert outcome.reason == reason
    assert outcome.http_status == 200


def test_an_object_without_a_list_says_what_it_found_under_executing() -> None:
    missing = read(make_response(200, {"unexpected": True}))
    wrong = read(make_response(200, {"executing": "3"}))
    assert isinstance(missing, Transient) and missing.detail == {"executing": "missing"}
    assert isinstance(wrong, Transient) and wrong.detail == {"executing": "str"}


# ---------------------------------------------------------------------------------------------
# Other statuses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 404])
def test_400_and_404_say_the_scheduler_does_not_work_here(status: int) -> None:
    outcome = read(make_response(status, {"error": "Not found"}))
    assert isinstance(outcome, Rejected)
    assert outcome.http_status == status
    assert outcome.message == "Not found"


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_unauthorized(status: int) -> None:
    outcome = read(make_response(status, {"error": "Unauthorized", "code": status}))
    assert isinstance(outcome, Unauthorized)
    assert outcome.http_status == status
    assert outcome.message == "Unauthorized"


def test_429_with_retry_after_is_rate_limited_for_that_long() -> None:
    outcome = read(make_response(429, {"error": "slow"}, headers={"Retry-After": "12"}))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after == 12.0
    assert outcome.message == "slow"


def test_429_without_retry_after_has_none() -> None:
    outcome = read(make_response(429, {"error": "slow"}))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after is None


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (500, "HTTP 500: server error"),
        (502, "HTTP 502: server error"),
        (503, "HTTP 503: server error"),
        (408, "HTTP 408: request timeout"),
        (412, "HTTP 412: precondition failed (out of credits)"),
        (596, "HTTP 596: account on hold"),
    ],
)
def test_server_errors_timeouts_and_credits_are_transient(status: int, reason: str) -> None:
    outcome = read(make_response(status, "<html>busy</html>"))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == status
    assert outcome.reason == reason


def test_a_redirected_scheduler_read_is_transient_not_followed_and_its_body_is_never_read() -> None:
    raw = FakeRaw(size=50 * MB)
    client, adapter = client_with(
        make_response(302, headers={"Location": "https://evil.example/steal"}, raw=raw)
    )
    outcome = client.scheduler()
    assert isinstance(outcome, Transient)
    assert outcome.http_status == 302
    assert "redirect" in outcome.reason
    assert len(adapter.sent) == 1
    assert raw.bytes_read == 0
    assert raw.closed


def test_a_scheduler_answer_over_the_body_cap_stops_being_read_just_past_it() -> None:
    raw = FakeRaw(size=50 * MB)
    started = time.monotonic()
    outcome = read(make_response(200, raw=raw), max_body_bytes=MB)
    assert isinstance(outcome, Transient)
    assert "body too large" in outcome.reason
    assert outcome.http_status == 200
    assert raw.bytes_read <= MB + 1
    assert raw.closed
    assert time.monotonic() - started < 2.0


def test_a_slow_drip_scheduler_answer_is_cut_off_at_the_overall_deadline() -> None:
    body = json.dumps([item(f"{A}{n}") for n in range(20)]).encode()
    raw = FakeRaw(body, per_read=1, delay=0.01)
    outcome = read(make_response(200, raw=raw), connect_timeout=0.05, read_timeout=0.05)
    assert isinstance(outcome, Transient)
    assert "deadline" in outcome.reason
    assert raw.closed


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (requests.exceptions.ConnectTimeout("slow connect"), "connect timeout"),
        (requests.exceptions.ReadTimeout("slow read"), "read timeout"),
        (requests.exceptions.ConnectionError(ConnectionResetError(104, "reset")), None),
    ],
)
def test_transport_failures_are_transient(error: BaseException, reason: str | None) -> None:
    outcome = read(error)
    assert isinstance(outcome, Transient)
    assert outcome.http_status is None
    if reason is not None:
        assert outcome.reason == reason


def test_a_reset_while_reading_the_body_is_transient() -> None:
    error = urllib3.exceptions.ProtocolError("reset", ConnectionResetError(104, "reset"))
    raw = FakeRaw(json.dumps([item(A)]).encode(), per_read=5, fail_with=error, fail_after=5)
    outcome = read(make_response(200, raw=raw))
    assert isinstance(outcome, Transient)
    assert outcome.reason == "connection reset while reading the body"


def test_every_scheduler_outcome_carries_the_request_latency() -> None:
    def slow(_request: requests.PreparedRequest) -> Any:
        time.sleep(0.02)
        return make_response(200, [item(A)])

    assert 0.02 <= read(slow).latency < 1.0


def test_long_scheduler_error_messages_are_truncated() -> None:
    outcome = read(make_response(404, {"error": "x" * 100_000}))
    assert isinstance(outcome, Rejected)
    assert 0 < len(outcome.message) <= MAX_MESSAGE_CHARS


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def _echoes(token: str) -> list[Reply]:
    """Scheduler answers in which a careless upstream reflects the token back at us."""
    return [
        *echoing_errors(token, "scheduler"),
        make_response(200, {"executing": {"token": token}}),
        # Dropped items are not kept, and an "id" that is the token is an echo, not a job.
        make_response(200, [{"id": 5, "note": token}, token, f"id-{token}", item(A)]),
        make_response(200, [item(token), item(f"user:{token}", "videoId"), item(B)]),
        *echoing_transport(token, b"[]"),
    ]


@pytest.mark.parametrize("token_form", ["plain", "percent-encoded"])
def test_no_scheduler_outcome_ever_contains_the_token(token_form: str) -> None:
    echoed = TOKEN if token_form == "plain" else ENCODED_TOKEN
    for reply in _echoes(echoed):
        client, _ = client_with(reply)
        outcome = client.scheduler()
        assert TOKEN not in repr(outcome), outcome
        assert ENCODED_TOKEN not in repr(outcome), outcome
        assert TOKEN not in json.dumps(outcome.__dict__, default=str)


def test_an_id_echoing_the_token_is_dropped_and_the_others_kept() -> None:
    outcome = executing(read(make_response(200, [item(A), item(f"x{TOKEN}"), B])))
    assert outcome.ids == (A, B)
    assert outcome.dropped == 1

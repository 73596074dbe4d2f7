"""Unit tests for pixverse_tracker.upstream (the transport and the answers) by id, driven through
a fake transport adapter mounted on the session (tests/unit/conftest.py). What fetching by id
shares with reading the list is in test_client_reads.py, once for each."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
import urllib3

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
from pixverse_tracker.upstream.bodies import MAX_RETRY_AFTER, parse_retry_after
from pixverse_tracker.upstream.transport import UseapiClient
from pixverse_tracker.upstream.urls import VIDEOS_PATH, video_url
from tests.unit.conftest import (
    BASE,
    DELETED_404,
    ENCODED_TOKEN,
    GENERIC_404,
    MB,
    TOKEN,
    VID,
    FakeRaw,
    Reply,
    client_with,
    make_response,
    record_for,
)


def fetch(reply: Reply, video_id: str = VID, **kwargs: Any) -> Outcome:
    client, _ = client_with(reply, **kwargs)
    return client.fetch(video_id)


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


def test_429_with_an_unreadable_body_is_still_rate_limited() -> None:
    raw = FakeRaw(size=10 * MB)
    outcome = fetch(make_response(429, headers={"Retry-After": "5"}, raw=raw), max_body_bytes=64)
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after == 5.0
    assert outcome.message == ""


def test_503_passes_its_retry_after_on_in_the_detail() -> None:
    outcome = fetch(make_response(503, headers={"Retry-After": "12"}))
    assert isinstance(outcome, Transient)
    assert outcome.detail["retry_after"] == 12.0


# ---------------------------------------------------------------------------------------------
# Transport failures
# ---------------------------------------------------------------------------------------------


def test_failure_while_reading_a_404_body_is_transient() -> None:
    raw = FakeRaw(
        DELETED_404.encode(), fail_with=urllib3.exceptions.ProtocolError("broken"), fail_after=4
    )
    outcome = fetch(make_response(404, raw=raw))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == 404
    assert "while reading the body" in outcome.reason


# ---------------------------------------------------------------------------------------------
# Messages, secrets and latency
# ---------------------------------------------------------------------------------------------


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

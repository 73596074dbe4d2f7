"""Unit tests for UseapiClient.list_videos and list_url, driven through the fake transport adapter
(tests/unit/conftest.py). What reading the list shares with fetching by id is in
test_client_reads.py, once for each."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import urllib3
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pixverse_tracker.rules.outcomes import (
    ListOutcome,
    Page,
    Record,
    Rejected,
    Transient,
    kind_of,
)
from pixverse_tracker.upstream.urls import MAX_EMAIL_CHARS, MAX_LIST_LIMIT, VIDEOS_PATH, list_url
from tests.unit.conftest import (
    BASE,
    DELETED_404,
    EMAIL,
    GENERIC_404,
    MB,
    TOKEN,
    FakeAdapter,
    FakeRaw,
    Reply,
    client_with,
    make_response,
)
from tests.unit.conftest import list_entries as entries
from tests.unit.conftest import list_entry as entry


def list_page(
    reply: Reply, *, email: str = EMAIL, limit: int = 40, offset: int = 0, **kwargs: Any
) -> ListOutcome:
    client, _ = client_with(reply, **kwargs)
    return client.list_videos(email, limit=limit, offset=offset)


def sent_query(adapter: FakeAdapter, index: int = -1) -> list[tuple[str, str]]:
    url = adapter.sent[index].request.url
    assert url is not None
    return parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)


# ---------------------------------------------------------------------------------------------
# list_url
# ---------------------------------------------------------------------------------------------


def test_list_url_encodes_plus_keeps_at_and_carries_limit_and_offset() -> None:
    assert list_url(BASE, EMAIL, 40, 0) == (
        "https://api.useapi.net/v2/pixverse/videos/?email=a%2Bb@x.com&limit=40&offset=0"
    )


def test_list_url_tolerates_a_trailing_slash_on_the_base() -> None:
    assert list_url(BASE + "/", EMAIL, 10, 20) == list_url(BASE, EMAIL, 10, 20)


def test_the_prepared_list_request_keeps_the_encoding_on_the_wire() -> None:
    client, adapter = client_with(make_response(200, {"data": []}))
    client.list_videos(EMAIL, limit=25, offset=50)
    assert adapter.sent[0].request.path_url == (
        "/v2/pixverse/videos/?email=a%2Bb@x.com&limit=25&offset=50"
    )


@pytest.mark.parametrize(
    "email",
    [
        EMAIL,
        "a&limit=1@x.com",
        "a&offset=999@x.com",
        "a=b@x.com",
        "a#frag@x.com",
        "a?x=1@x.com",
        "../../admin@x.com",
        "a/b@x.com",
        "100%@x.com",
        "%2B@x.com",
        "%26limit%3D1@x.com",
        "a;b@x.com",
        "a\\b@x.com",
        "ünïcødé@x.com",
        "@",
    ],
)
def test_no_email_can_add_a_parameter_or_change_the_path(email: str) -> None:
    client, adapter = client_with(make_response(200, {"data": []}))
    client.list_videos(email, limit=7, offset=3)
    url = adapter.sent[0].request.url
    assert url is not None
    parts = urlsplit(url)
    assert parts.netloc == "api.useapi.net"
    assert parts.path == VIDEOS_PATH
    assert parts.fragment == ""
    assert "+" not in parts.query
    assert sent_query(adapter) == [("email", email), ("limit", "7"), ("offset", "3")]
    # What urllib3 would put on the wire: the same path, no re-splitting of the query.
    assert urllib3.util.parse_url(url).path == VIDEOS_PATH


@pytest.mark.parametrize(
    "email",
    [
        "",
        " ",
        "a b@x.com",
        " a@x.com",
        "a@x.com\n",
        "a\t@x.com",
        "a@x.com\r\nX-Injected: 1",
        "a\x00@x.com",
        "a\x7f@x.com",
        "a\u2028@x.com",
        "a\u200b@x.com",
        "a\udc80@x.com",
        "x" * (MAX_EMAIL_CHARS + 1),
    ],
)
def test_list_videos_raises_value_error_for_an_unusable_email_and_sends_nothing(
    email: str,
) -> None:
    client, adapter = client_with(make_response(200, {"data": []}))
    with pytest.raises(ValueError):
        client.list_videos(email)
    assert adapter.sent == []


@pytest.mark.parametrize(
    ("limit", "offset"),
    [
        (0, 0),
        (-1, 0),
        (MAX_LIST_LIMIT + 1, 0),
        (10**9, 0),
        (40, -1),
        (True, 0),
        (40, False),
        (40.0, 0),
        (40, 1.5),
        ("40", 0),
    ],
)
def test_list_videos_raises_value_error_for_a_limit_or_offset_out_of_range(
    limit: Any, offset: Any
) -> None:
    client, adapter = client_with(make_response(200, {"data": []}))
    with pytest.raises(ValueError):
        client.list_videos(EMAIL, limit=limit, offset=offset)
    assert adapter.sent == []


@pytest.mark.parametrize(
    ("email", "limit", "offset"),
    [("x" * MAX_EMAIL_CHARS, 40, 0), (EMAIL, 1, 0), (EMAIL, MAX_LIST_LIMIT, 10**9)],
)
def test_the_bounds_themselves_are_accepted(email: str, limit: int, offset: int) -> None:
    outcome = list_page(make_response(200, {"data": []}), email=email, limit=limit, offset=offset)
    assert isinstance(outcome, Page)


def test_a_value_error_does_not_echo_the_token() -> None:
    client, _ = client_with(make_response(200, {"data": []}))
    with pytest.raises(ValueError) as caught:
        client.list_videos("")
    assert TOKEN not in str(caught.value)


NASTY = st.sampled_from(
    ["&", "=", "#", "?", "/", "%", "+", "@", ";", "%2B", "%26", "..", " ", "\n"]
)
EMAILS = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(NASTY, st.text(max_size=4)), max_size=12).map("".join),
)


@settings(max_examples=300)
@given(EMAILS, st.integers(1, MAX_LIST_LIMIT), st.integers(0, 10**6))
@example("a&limit=1&offset=2#x", 40, 0)
@example("a+b@x.com", 40, 0)
@example("%2B%26", 1, 1)
def test_any_accepted_email_arrives_as_exactly_one_parameter(
    email: str, limit: int, offset: int
) -> None:
    try:
        url = list_url(BASE, email, limit, offset)
    except ValueError:
        return
    prepared = requests.Request("GET", url).prepare()
    assert prepared.url is not None
    parts = urlsplit(prepared.url)
    assert parts.path == VIDEOS_PATH
    assert parts.fragment == ""
    assert "+" not in parts.query
    assert parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True) == [
        ("email", email),
        ("limit", str(limit)),
        ("offset", str(offset)),
    ]


# ---------------------------------------------------------------------------------------------
# 200: the two readings of a page
# ---------------------------------------------------------------------------------------------


def test_a_short_documented_page_is_the_last_page() -> None:
    data = [entry(1, video_status=1, url="https://media.pixverse.ai/1.mp4"), entry(2)]
    outcome = list_page(make_response(200, {"data": data}))
    assert outcome == Page(
        entries=tuple(data), offset=0, next_offset=None, dropped=0, latency=outcome.latency
    )
    assert outcome.http_status == 200
    assert kind_of(outcome) == "page"


def test_a_full_documented_page_may_have_a_successor_right_after_it() -> None:
    outcome = list_page(make_response(200, {"data": entries(3)}), limit=3, offset=6)
    assert isinstance(outcome, Page)
    assert outcome.offset == 6
    assert outcome.next_offset == 9


def test_a_page_longer_than_the_limit_continues_after_everything_it_held() -> None:
    outcome = list_page(make_response(200, {"data": entries(5)}), limit=3, offset=6)
    assert isinstance(outcome, Page)
    assert outcome.next_offset == 11


def test_an_empty_documented_page_is_the_last_page() -> None:
    outcome = list_page(make_response(200, {"data": []}), offset=80)
    assert outcome == Page(entries=(), offset=80, next_offset=None, latency=outcome.latency)


def test_the_newer_form_follows_the_upstreams_next_offset() -> None:
    body = {"data": entries(2), "has_more": True, "next_offset": 60}
    outcome = list_page(make_response(200, body), limit=40, offset=40)
    assert isinstance(outcome, Page)
    assert len(outcome.entries) == 2
    assert outcome.next_offset == 60


def test_has_more_false_ends_the_listing_even_on_a_full_page() -> None:
    body = {"data": entries(3), "has_more": False, "next_offset": 3}
    outcome = list_page(make_response(200, body), limit=3)
    assert isinstance(outcome, Page)
    assert outcome.next_offset is None


def test_has_more_true_without_next_offset_continues_after_the_page() -> None:
    body = {"data": entries(2), "has_more": True}
    outcome = list_page(make_response(200, body), limit=40, offset=10)
    assert isinstance(outcome, Page)
    assert outcome.next_offset == 12


@pytest.mark.parametrize("next_offset", [None, "60", 60.0, True, 10, 5, -1, [60], {"n": 60}])
def test_an_unusable_next_offset_falls_back_to_counting_the_page(next_offset: Any) -> None:
    body = {"data": entries(2), "has_more": True, "next_offset": next_offset}
    outcome = list_page(make_response(200, body), limit=40, offset=10)
    assert isinstance(outcome, Page)
    assert outcome.next_offset == 12


@pytest.mark.parametrize("has_more", [None, "true", "false", 1, 0, [], {}])
def test_a_has_more_that_is_not_a_boolean_falls_back_to_the_full_page_rule(has_more: Any) -> None:
    full = list_page(make_response(200, {"data": entries(3), "has_more": has_more}), limit=3)
    short = list_page(make_response(200, {"data": entries(2), "has_more": has_more}), limit=3)
    assert isinstance(full, Page) and isinstance(short, Page)
    assert full.next_offset == 3
    assert short.next_offset is None


@pytest.mark.parametrize(
    "body",
    [
        {"data": [], "has_more": True},
        {"data": [], "has_more": True, "next_offset": 20},
        {"data": [], "has_more": True, "next_offset": 0},
    ],
)
def test_an_empty_page_that_claims_more_without_moving_on_stops_the_listing(
    body: dict[str, Any],
) -> None:
    outcome = list_page(make_response(200, body), offset=20)
    assert isinstance(outcome, Page)
    assert outcome.entries == ()
    assert outcome.next_offset is None


def test_an_empty_page_that_names_a_later_offset_moves_on_to_it() -> None:
    body = {"data": [], "has_more": True, "next_offset": 60}
    outcome = list_page(make_response(200, body), offset=20)
    assert isinstance(outcome, Page)
    assert outcome.next_offset == 60


def test_a_top_level_array_is_read_as_the_page() -> None:
    data = entries(2)
    outcome = list_page(make_response(200, data))
    assert outcome == Page(entries=tuple(data), offset=0, next_offset=None, latency=outcome.latency)


def test_a_full_top_level_array_may_have_a_successor() -> None:
    outcome = list_page(make_response(200, entries(4)), limit=4, offset=4)
    assert isinstance(outcome, Page)
    assert outcome.next_offset == 8


def test_abbreviated_records_and_unknown_fields_are_kept_as_received() -> None:
    data = [
        {"video_id": "user:1-pixverse:a+b@x.com-video:1"},
        entry(2, queue_data={"queue_time": 3}, lip_sync=None, brand_new_field=[1, 2]),
        entry(3, video_status=5, video_status_name="QUEUED", video_status_final=True),
    ]
    outcome = list_page(make_response(200, {"data": data, "total": 3, "extra": None}))
    assert isinstance(outcome, Page)
    assert outcome.entries == tuple(data)


def test_items_without_a_usable_video_id_are_dropped_and_counted() -> None:
    data = [
        entry(1),
        1,
        "user:1-pixverse:a+b@x.com-video:9",
        None,
        [],
        {},
        {"video_id": None, "video_status": 10},
        {"video_id": 112233},
        {"video_id": ""},
        {"video_id": ["user:1-pixverse:a+b@x.com-video:9"]},
        {"video_status": 1},
        entry(2),
    ]
    outcome = list_page(make_response(200, {"data": data}))
    assert isinstance(outcome, Page)
    assert outcome.entries == (entry(1), entry(2))
    assert outcome.dropped == 10


def test_dropped_items_still_count_towards_a_full_page() -> None:
    outcome = list_page(make_response(200, {"data": [entry(1), None, {}]}), limit=3, offset=3)
    assert isinstance(outcome, Page)
    assert len(outcome.entries) == 1
    assert outcome.dropped == 2
    assert outcome.next_offset == 6


# ---------------------------------------------------------------------------------------------
# 200 without a usable page
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [{"error": "Something broke"}, {"error": "Something broke", "code": 500}]
)
def test_an_error_wearing_a_200_is_transient_with_the_upstream_message(
    body: dict[str, Any],
) -> None:
    outcome = list_page(make_response(200, body))
    assert outcome == Transient(
        "200 body holds an error, not a page",
        200,
        outcome.latency,
        {"message": "Something broke"},
    )


@pytest.mark.parametrize(
    ("body", "data"),
    [
        ({}, "missing"),
        ({"videos": entries(2)}, "missing"),
        ({"code": 200}, "missing"),
        ({"error": "boom", "status": "x"}, "missing"),
        ({"data": None}, "NoneType"),
        ({"data": {"video_id": "user:1-pixverse:a+b@x.com-video:1"}}, "dict"),
        ({"data": "[]"}, "str"),
        ({"data": 3}, "int"),
    ],
)
def test_a_200_object_without_a_data_array_is_transient(body: dict[str, Any], data: str) -> None:
    outcome = list_page(make_response(200, body))
    assert isinstance(outcome, Transient)
    assert outcome.reason == "200 list body has no data array"
    assert outcome.http_status == 200
    assert outcome.detail == {"data": data}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "200 body is not valid JSON"),
        (b"<html>502 Bad Gateway</html>", "200 body is not valid JSON"),
        (b'{"data": [{"video_id": "user:1-pix', "200 body is not valid JSON"),
        (b'{"data": [], "next_offset": NaN}', "200 body is not valid JSON"),
        (b"\xff\xfe\x00garbage", "200 body is not valid JSON"),
        (b"42", "neither an object nor an array"),
        (b'"text"', "neither an object nor an array"),
        (b"null", "neither an object nor an array"),
        (b"true", "neither an object nor an array"),
    ],
)
def test_a_200_that_is_not_a_json_object_or_array_is_transient(body: bytes, reason: str) -> None:
    outcome = list_page(make_response(200, body))
    assert isinstance(outcome, Transient)
    assert reason in outcome.reason
    assert outcome.http_status == 200


# ---------------------------------------------------------------------------------------------
# Other statuses
# ---------------------------------------------------------------------------------------------


def test_400_rejects_the_list_with_the_upstream_error() -> None:
    outcome = list_page(make_response(400, {"error": "Parameter email is invalid", "code": 400}))
    assert outcome == Rejected(
        message="Parameter email is invalid", http_status=400, latency=outcome.latency
    )


@pytest.mark.parametrize(
    "body",
    [{"error": "Account not found", "code": 404}, {"error": GENERIC_404}, {"error": DELETED_404}],
)
def test_404_rejects_the_list_and_never_means_a_video_was_deleted(body: dict[str, Any]) -> None:
    outcome = list_page(make_response(404, body))
    assert isinstance(outcome, Rejected)
    assert outcome.http_status == 404
    assert outcome.message == body["error"]


def test_a_404_whose_body_cannot_be_read_is_still_rejected_without_a_message() -> None:
    outcome = list_page(make_response(404, raw=FakeRaw(size=10 * MB)), max_body_bytes=1024)
    assert outcome == Rejected(message="", http_status=404, latency=outcome.latency)


# ---------------------------------------------------------------------------------------------
# Sharing the client with fetch
# ---------------------------------------------------------------------------------------------


def test_one_client_lists_and_fetches_through_one_session() -> None:
    client, adapter = client_with(
        make_response(200, {"data": [entry(1)], "has_more": True, "next_offset": 1}),
        make_response(200, {"data": [], "has_more": False}),
        make_response(200, entry(1)),
    )
    first = client.list_videos(EMAIL, limit=1)
    assert isinstance(first, Page) and first.next_offset == 1
    second = client.list_videos(EMAIL, limit=1, offset=first.next_offset)
    assert isinstance(second, Page) and second.next_offset is None
    assert isinstance(client.fetch(entry(1)["video_id"]), Record)
    assert len(adapter.sent) == 3
    assert sent_query(adapter, 1) == [("email", EMAIL), ("limit", "1"), ("offset", "1")]

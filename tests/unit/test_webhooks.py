"""Completion-callback rules: URL validation, signature, body, idempotency key, retry timing."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.webhooks import (
    MAX_RETRY,
    InvalidCallbackUrl,
    body_for,
    idempotency_key,
    retry_delay,
    sign,
    validate_url,
    verify,
)

WHEN = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
ROW = {
    "video_id": "user:1-pixverse:a@b.com-video:1",
    "state": "done",
    "status_code": 1,
    "status_name": "COMPLETED",
    "url": "https://media/1.mp4",
    "enqueued_at": WHEN,
    "done_at": WHEN + timedelta(minutes=2),
    "record": {"video_id": "user:1-pixverse:a@b.com-video:1", "extra": [1, 2]},
    "claim_token": "internal, never sent",
}


@pytest.mark.parametrize(
    "url",
    ["https://app.example.com/hooks/pixverse", "http://127.0.0.1:8080/cb?x=1", "https://[::1]/cb"],
)
def test_http_and_https_urls_with_a_host_are_accepted(url: str) -> None:
    assert validate_url(url) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("ftp://example.com/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("https:///nohost", "no host"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com/#frag", "fragment"),
        ("https://example.com:99999/", "malformed"),
        ("https://example.com/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_bad_callback_urls_are_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(InvalidCallbackUrl, match=problem):
        validate_url(url)


def test_the_signature_is_hmac_sha256_of_the_raw_body_and_verifies() -> None:
    body = b'{"event":"video.done"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body) == f"sha256={expected}"
    assert verify("s3cret", body, sign("s3cret", body))
    assert not verify("other", body, sign("s3cret", body))
    assert not verify("s3cret", body + b" ", sign("s3cret", body))


def test_the_body_carries_the_event_key_and_public_columns_only() -> None:
    key = idempotency_key(ROW["video_id"], "done", WHEN)
    body = json.loads(body_for("done", key, ROW))
    assert body["event"] == "video.done"
    assert body["idempotency_key"] == key
    assert body["video"]["url"] == "https://media/1.mp4"
    assert body["video"]["done_at"] == "2026-11-29T10:02:00+00:00"
    assert body["video"]["record"]["extra"] == [1, 2]
    assert "claim_token" not in body["video"]


def test_the_body_is_byte_for_byte_stable_so_retries_keep_their_signature() -> None:
    key = idempotency_key(ROW["video_id"], "done", WHEN)
    assert body_for("done", key, ROW) == body_for("done", key, dict(reversed(list(ROW.items()))))


def test_the_idempotency_key_is_stable_per_finish_and_new_per_tracking_run() -> None:
    first = idempotency_key(ROW["video_id"], "done", WHEN)
    assert first == idempotency_key(ROW["video_id"], "done", WHEN)
    assert first != idempotency_key(ROW["video_id"], "done", WHEN + timedelta(hours=1))
    assert first != idempotency_key(ROW["video_id"], "abandoned", WHEN)
    assert len(first) == 64


@given(st.integers(min_value=0, max_value=1000), st.integers())
def test_retry_delays_grow_from_ten_seconds_and_never_exceed_an_hour(
    attempts: int, seed: int
) -> None:
    delay = retry_delay(attempts, random.Random(seed))
    assert 8.0 <= delay <= MAX_RETRY
    if attempts == 0:
        assert delay <= 10.0

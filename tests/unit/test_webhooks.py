"""Webhook rules: URL validation, signature, body, idempotency key, retry timing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from pixverse_tracker.rules.webhooks import (
    MAX_RETRY,
    InvalidSecret,
    InvalidWebhookUrl,
    body_for,
    idempotency_key,
    retry_delay,
    scrub_url,
    shown_url,
    sign,
    signed_headers,
    signing_key,
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
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address, which is never"),
        ("http://[::ffff:169.254.169.254]/", r"cloud metadata address \(as 169.254.169.254\)"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0/", "unspecified"),
    ],
)
def test_bad_webhook_urls_are_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(InvalidWebhookUrl, match=problem):
        validate_url(url)


def test_the_signature_is_standard_webhooks_hmac_sha256_over_id_timestamp_and_body() -> None:
    body = b'{"event":"video.done"}'
    digest = hmac.new(b"s3cret", b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert sign(b"s3cret", "msg_1", 1700000000, body) == "v1," + base64.b64encode(digest).decode()


def test_our_headers_verify_with_the_reference_library_and_with_ours() -> None:
    body = b'{"event":"video.done"}'
    now = datetime.now(UTC).timestamp()
    headers = signed_headers(signing_key("plain-secret"), "abc123", "done", body, now)
    assert headers["webhook-id"] == "abc123" and headers["webhook-timestamp"] == str(int(now))
    assert Webhook(b"plain-secret").verify(body, headers) == {"event": "video.done"}
    assert verify(signing_key("plain-secret"), headers, body, now)
    assert not verify(signing_key("other"), headers, body, now)
    assert not verify(signing_key("plain-secret"), headers, body + b" ", now)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"other").verify(body, headers)


def test_a_whsec_secret_is_base64_decoded_as_the_libraries_do() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    assert signing_key(secret) == key
    body = b"{}"
    headers = signed_headers(signing_key(secret), "id", "done", body, datetime.now(UTC).timestamp())
    Webhook(secret).verify(body, headers)


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not base64!", "whsec_@@@@"])
def test_a_malformed_whsec_secret_is_refused(secret: str) -> None:
    with pytest.raises(InvalidSecret, match="whsec_"):
        signing_key(secret)


def test_a_timestamp_outside_five_minutes_fails_verification_either_way() -> None:
    key, body = signing_key("s"), b"{}"
    headers = signed_headers(key, "id", "done", body, 1_700_000_000)
    assert verify(key, headers, body, now=1_700_000_000 + 299)
    assert not verify(key, headers, body, now=1_700_000_000 + 301)
    assert not verify(key, headers, body, now=1_700_000_000 - 301)
    assert not verify(key, {**headers, "webhook-timestamp": "1e9"}, body, now=1e9)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://app.example.com/hook?token=abc", "https://app.example.com/hook?…"),
        ("https://user:pw@app.example.com:8443/h", "https://app.example.com:8443/h"),
        ("http://[::1]:8080/h?x=1#frag", "http://[::1]:8080/h?…"),
        ("https://app.example.com/hook", "https://app.example.com/hook"),
    ],
)
def test_a_shown_url_has_no_query_credentials_or_fragment(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_scrubbing_removes_the_query_and_credentials_from_any_text() -> None:
    url = "https://bob:hunter22@app.example.com/hook?token=abc123"
    text = f"failed for {url} (token=abc123, user bob:hunter22)"
    scrubbed = scrub_url(text, url)
    assert "abc123" not in scrubbed and "hunter22" not in scrubbed
    assert "https://app.example.com/hook?…" in scrubbed


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


# --- the settings that govern webhooks -----------------------------------------------------------


def test_by_default_private_addresses_are_refused_and_the_deadline_ends_before_the_lease() -> None:
    from pixverse_tracker.service import sender
    from pixverse_tracker.settings import load

    s = load({})
    assert s.webhook_allow_private is False and s.webhook_allowlist == ""
    assert s.webhook_concurrency == 4
    assert s.webhook_timeout == 10.0 < sender.lease(s.webhook_timeout)


@pytest.mark.parametrize(
    ("env", "phrase"),
    [
        ({"TRACKER_WEBHOOK_URL": "http://[::ffff:169.254.169.254]/x"}, "TRACKER_WEBHOOK_URL: "),
        ({"TRACKER_WEBHOOK_SECRET": "whsec_%%%"}, "TRACKER_WEBHOOK_SECRET: a whsec_ secret"),
        ({"TRACKER_WEBHOOK_ALLOWLIST": "10.0.0.0/8, bad/entry"}, "TRACKER_WEBHOOK_ALLOWLIST: "),
        ({"TRACKER_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "TRACKER_WEBHOOK_ALLOW_PRIVATE='maybe'"),
        ({"TRACKER_WEBHOOK_CONCURRENCY": "0"}, "TRACKER_WEBHOOK_CONCURRENCY='0'"),
    ],
)
def test_bad_webhook_settings_are_refused_naming_the_variable(
    env: dict[str, str], phrase: str
) -> None:
    from pixverse_tracker.settings import SettingsError, load

    with pytest.raises(SettingsError) as caught:
        load(env)
    assert phrase in str(caught.value) and "\n" not in str(caught.value)


def test_the_default_webhook_urls_query_is_not_shown_by_repr() -> None:
    from pixverse_tracker.settings import load

    s = load({"TRACKER_WEBHOOK_URL": "https://app.example.com/hook?token=app-secret-9"})
    assert s.webhook_url == "https://app.example.com/hook?token=app-secret-9"
    assert "app-secret-9" not in repr(s) and "https://app.example.com/hook?…" in repr(s)


def test_deliver_ticks_have_a_queue_of_their_own_next_to_dispatch_and_poll() -> None:
    from pixverse_tracker.jobs.app import celery_config
    from pixverse_tracker.settings import load

    config = celery_config(load({"TRACKER_QUEUE_PREFIX": "t1"}))
    assert config["task_routes"]["tracker.deliver"] == {"queue": "t1.deliver"}
    assert config["task_routes"]["tracker.poll"] == {"queue": "t1.poll"}
    assert {q.name for q in config["task_queues"]} == {"t1.dispatch", "t1.poll", "t1.deliver"}

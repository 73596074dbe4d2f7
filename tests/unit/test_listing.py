"""The list endpoint's rules (worker/listing.py): pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pixverse_tracker.rules import listing
from pixverse_tracker.rules.listing import (
    Finding,
    account_of,
    grid_for,
    group_key,
    is_full_record,
    read_entry,
)
from pixverse_tracker.testing.fake_records import EXAMPLE_RECORD
from tests.policies import policy_with

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
VIDEO = "user:1-pixverse:Team+a@Example.com-video:42"


def full(**fields: Any) -> dict[str, Any]:
    return {**EXAMPLE_RECORD, "video_id": VIDEO, **fields}


def brief(**fields: Any) -> dict[str, Any]:
    keep = ("video_id", "video_status", "video_status_name", "video_status_final", "url")
    return {k: v for k, v in full(**fields).items() if k in keep}


def test_the_account_is_the_email_inside_a_video_id() -> None:
    assert account_of(VIDEO) == "Team+a@Example.com"


def test_images_and_malformed_ids_have_no_account_list() -> None:
    assert account_of("user:1-pixverse:a@example.com-image:42") is None
    assert account_of("not an id") is None


def test_the_documented_record_is_a_full_record_and_a_short_entry_is_not() -> None:
    assert is_full_record(full())
    assert not is_full_record(brief())
    unknown_extra = full(brand_new_field=1)
    assert is_full_record(unknown_extra)
    missing_one = full()
    del missing_one["template_name"]
    assert not is_full_record(missing_one)


@pytest.mark.parametrize(
    ("entry", "finding"),
    [
        (full(), Finding.FINAL),
        (full(video_status=8, video_status_name="FAILED", url=""), Finding.FINAL),
        (brief(), Finding.FETCH),
        (
            full(video_status=10, video_status_name="GENERATING", video_status_final=False),
            Finding.IN_PROGRESS,
        ),
        # the videos page documents QUEUED as final: the list keeps it in progress
        (
            full(video_status=5, video_status_name="QUEUED", video_status_final=True),
            Finding.IN_PROGRESS,
        ),
        # looks finished but is not proof: the single-video endpoint decides
        (full(url=""), Finding.FETCH),
        (full(video_status_final=False), Finding.FETCH),
        (
            full(video_status=42, video_status_name="MYSTERY", video_status_final=False),
            Finding.IN_PROGRESS,
        ),
        ({"video_id": VIDEO}, Finding.IN_PROGRESS),
    ],
    ids=[
        "completed-full",
        "failed-full",
        "completed-brief",
        "generating",
        "queued-final",
        "completed-no-url",
        "completed-not-final",
        "unknown",
        "no-status",
    ],
)
def test_a_listed_entry_is_judged_like_a_fetched_record(
    entry: dict[str, Any], finding: Finding
) -> None:
    assert read_entry(entry) is finding


def test_ids_share_the_list_of_their_account_unless_it_missed_them_lately() -> None:
    assert group_key(VIDEO, None, NOW, 3600) == "Team+a@Example.com"
    recently = NOW - timedelta(minutes=5)
    assert group_key(VIDEO, recently, NOW, 3600) is None
    long_ago = NOW - timedelta(hours=2)
    assert group_key(VIDEO, long_ago, NOW, 3600) == "Team+a@Example.com"
    assert group_key("user:1-pixverse:a@example.com-image:1", None, NOW, 3600) is None


def test_the_grid_exists_only_with_the_list_on() -> None:
    assert grid_for(VIDEO, None, NOW, policy_with()) is None
    on = policy_with(list_interval=10)
    grid = grid_for(VIDEO, None, NOW, on)
    assert grid is not None and grid.period == 10
    assert grid_for(VIDEO, NOW, NOW, on) is None  # missed a minute ago: fetched by id


def test_the_full_record_keys_are_the_documented_model_less_its_optional_fields() -> None:
    assert "queue_data" not in listing.FULL_RECORD_KEYS
    assert "lip_sync" not in listing.FULL_RECORD_KEYS
    assert {"video_id", "url", "video_status_final"} <= listing.FULL_RECORD_KEYS
    assert set(EXAMPLE_RECORD) >= listing.FULL_RECORD_KEYS


def test_a_page_is_believed_only_about_its_own_account() -> None:
    other = "user:1-pixverse:someone@else.com-video:7"
    first, repeat = full(prompt="first"), full(prompt="repeat")
    entries = [first, {"video_id": other, "video_status": 1}, repeat, {"video_id": 42}, {}]
    found = listing.entries_of("Team+a@Example.com", entries)
    assert list(found) == [VIDEO]
    assert found[VIDEO]["prompt"] == "first"
    # the account is compared as written: another spelling is another account's list
    assert listing.entries_of("team+a@example.com", entries) == {}


@pytest.mark.parametrize(
    ("ids", "depth"),
    [(1, 3), (40, 3), (41, 4), (200, 7), (1000, 27), (1_000_000, listing.MAX_CHAIN_PAGES)],
)
def test_a_list_read_goes_deep_enough_for_every_id_it_asks_about(ids: int, depth: int) -> None:
    # pages of 40 and TRACKER_LIST_MAX_PAGES=3, the defaults: a small read goes 3 pages deep
    # as before; a burst as deep as its ids need, plus 2 pages for videos made since
    assert listing.chain_depth(ids, 40, 3) == depth

"""The list endpoint's rules: which ids share one request, and what a listed entry tells us.

``GET /v2/pixverse/videos/?email=`` returns an account's videos, newest first, with their
status, including those still queued or generating. One such request answers for every id of
that account on its pages. Pure functions; ``service.batch`` and ``service.list_reads`` do
the requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pixverse_tracker.rules import ids, schedule
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.rules.timing import first_poll_at
from pixverse_tracker.rules.verdict import COMPLETED, TERMINAL_FAILURES, Verdict, judge, status_of

# The fields of the single-video record as documented (useapi-pixverse-get-video.txt), less
# the optional ones (queue_data?, lip_sync?, customer_paths?) and the error field. A listed
# entry that carries all of them is the full record and is stored as it is; a shorter one
# only says "finished", and the record is fetched by id.
FULL_RECORD_KEYS = frozenset(
    {
        "video_id",
        "video_status",
        "account_id",
        "created_at",
        "first_frame",
        "output_width",
        "output_height",
        "original_video_id",
        "upscaled",
        "prompt",
        "model",
        "negative_prompt",
        "quality",
        "motion_mode",
        "asset_id",
        "auto_character_prompt",
        "seed",
        "likes",
        "model_name",
        "video_duration",
        "last_frame",
        "extended",
        "url",
        "img_id",
        "img_url",
        "duration",
        "motion_brush",
        "asset_name",
        "asset_img_url",
        "remove_watermark",
        "nick_name",
        "avatar",
        "aspect_ratio",
        "camera_movement",
        "relation_type",
        "style",
        "template_id",
        "template_name",
        "template_thumbnail_url",
        "template_thumbnail_video_url",
        "template_i18n_json",
        "workflow_tag",
        "platform",
        "video_status_name",
        "video_status_final",
    }
)


class Finding(Enum):
    """What a listed entry means for the id it names."""

    IN_PROGRESS = "in_progress"  # still queued or generating: reschedule, nothing to fetch
    FINAL = "final"  # finished, and the entry is the whole record: store it as it is
    FETCH = "fetch"  # finished (or says so): fetch the record by id to be sure


def account_of(video_id: str) -> str | None:
    """The account email whose list shows this id; None for images (they are not videos)."""
    email = ids.email_of(video_id)
    return email if email is not None and video_id.rsplit("-", 1)[-1].startswith("video:") else None


def is_full_record(entry: Mapping[str, Any]) -> bool:
    return FULL_RECORD_KEYS.issubset(entry)


def read_entry(entry: dict[str, Any]) -> Finding:
    """Judge a listed entry with the same rules as a fetched record (``verdict.judge``).

    Only an entry that is really final and complete is taken as the answer. One that merely
    looks final (COMPLETED without a url, a final flag on a status that is not) is fetched by
    id, where the anomaly rules apply; QUEUED with a final flag, which the useapi.net videos
    page documents, is in progress.
    """
    verdict, _ = judge(entry)
    if verdict in (Verdict.SUCCESS, Verdict.FAILURE):
        return Finding.FINAL if is_full_record(entry) else Finding.FETCH
    if verdict is Verdict.ANOMALY:
        code, _, _ = status_of(entry)
        if code == COMPLETED or code in TERMINAL_FAILURES:
            return Finding.FETCH
    return Finding.IN_PROGRESS


def entries_of(account: str, entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The entries of a page that belong to ``account``, by video id (the first one of a repeat).

    A page that names another account's video is not believed: storing that entry as the other
    video's record would be silent corruption, as a single-video answer for another id would.
    """
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        video_id = entry.get("video_id")
        if isinstance(video_id, str) and account_of(video_id) == account:
            found.setdefault(video_id, entry)
    return found


# The deepest a list read goes before the ids it has not found are fetched by id: 1,600
# videos at the default page size. It bounds a poll task's run time (Settings.task_time_limit).
MAX_CHAIN_PAGES = 40


def chain_depth(ids: int, page_size: int, extra_pages: int) -> int:
    """How many pages one list read may go through, from its first, for ``ids`` ids.

    Enough for every id to be on a page of its own (a burst of 1,000 videos fills 25 pages),
    plus ``extra_pages - 1`` (``TRACKER_LIST_MAX_PAGES``) for the videos made since, which push
    older ones down; a small read goes ``extra_pages`` deep, as it always did.
    """
    needed = math.ceil(ids / page_size) if ids > 0 else 1
    return min(MAX_CHAIN_PAGES, needed + extra_pages - 1)


def group_key(
    video_id: str,
    list_missed_at: datetime | None,
    now: datetime,
    retry_after: float,
) -> str | None:
    """The account whose list request should answer for this id, or None to fetch it by id.

    An id the list did not show (or whose list failed) recently is fetched by id until
    ``retry_after`` seconds have passed: it is older than the pages we read, or the list does
    not work for that account.
    """
    if list_missed_at is not None and now - list_missed_at < timedelta(seconds=retry_after):
        return None
    # As written in the id: that is how the account is named on useapi.net, whose email
    # parameter need not ignore case.
    return account_of(video_id)


def grid_for(
    video_id: str, list_missed_at: datetime | None, now: datetime, policy: Policy
) -> schedule.Grid | None:
    """The account grid this id's checks snap to, or None when it is fetched by id."""
    if policy.list_interval is None:
        return None
    account = group_key(video_id, list_missed_at, now, policy.list_retry)
    return schedule.Grid.for_account(account, policy.list_interval) if account else None


def first_polls(
    video_ids: Sequence[str], now: datetime, policy: Policy, known: schedule.Knowledge | None
) -> dict[str, datetime]:
    """First polls of ids read through the list: on their account's grid (one per account)."""
    by_account: dict[str, datetime] = {}
    firsts: dict[str, datetime] = {}
    for video_id in video_ids:
        account = group_key(video_id, None, now, policy.list_retry)
        if account is None:
            continue
        if account not in by_account:
            grid = grid_for(video_id, None, now, policy)
            by_account[account] = first_poll_at(now, policy, known, grid)
        firsts[video_id] = by_account[account]
    return firsts

"""The records the simulator answers with: the documented example record, made per id and per
phase, and the hostile and sloppy ones some scenarios send; and what the list shows of each."""

from __future__ import annotations

import math
import re
import time
import zlib
from typing import Any
from urllib.parse import quote

from pixverse_tracker.testing.scenarios import Moment, Scenario

# What a "brief" list entry keeps: the status fields a poller needs, nothing else.
_BRIEF_FIELDS = frozenset(
    {
        "video_id",
        "video_status",
        "video_status_name",
        "video_status_final",
        "url",
        "prompt",
        "model",
        "created_at",
        "queue_data",
    }
)


# The documented example record (useapi-pixverse-get-video.txt); per-id fields are overridden.
EXAMPLE_RECORD: dict[str, Any] = {
    "video_id": "user:<userid>-pixverse:<email>-video:112233445566",
    "video_status": 1,
    "account_id": 33445566,
    "created_at": "2024-11-11T12:34:56Z",
    "first_frame": "https://media.pixverse.ai/....jpg",
    "output_width": 2560,
    "output_height": 1472,
    "original_video_id": "user:<userid>-pixverse:<email>-video:66778899",
    "upscaled": 1,
    "prompt": "<prompt>",
    "model": "v3",
    "negative_prompt": "<negative prompt>",
    "quality": "360p",
    "motion_mode": "normal",
    "asset_id": 0,
    "auto_character_prompt": 0,
    "seed": 0,
    "likes": 0,
    "model_name": "",
    "queue_data": {"queue_time": 1, "queue_count": 0},
    "video_duration": 5,
    "last_frame": "",
    "extended": 0,
    "lip_sync": None,
    "url": "https://media.pixverse.ai/...mp4",
    "img_id": 115994841,
    "img_url": "https://media.pixverse.ai/...webp",
    "duration": 5,
    "motion_brush": "",
    "asset_name": "",
    "asset_img_url": "",
    "remove_watermark": 1,
    "nick_name": "<name>",
    "avatar": "https://media.pixverse.ai/...jpeg",
    "aspect_ratio": "",
    "camera_movement": "default",
    "relation_type": 0,
    "style": "",
    "template_id": 307489548427968,
    "template_name": "Crazy Cat Woman",
    "template_thumbnail_url": "https://media.pixverse.ai/asset%2Ftemplate%2Fcatwoman.png",
    "template_thumbnail_video_url": "https://media.pixverse.ai/asset%2Ftemplate%2Fcatwoman.mp4",
    "template_i18n_json": (
        '{"zh-CN":{"display_name":"疯狂猫女变身","display_prompt":"变身妖娆猫女,撩翻全场!"}}'
    ),
    "workflow_tag": "",
    "customer_paths": None,
    "platform": "",
    "video_status_name": "COMPLETED",
    "video_status_final": True,
}

_NUMBER_RE = re.compile(r":(\d+)$")


def number_of(video_id: str) -> str:
    match = _NUMBER_RE.search(video_id)
    # Ids without trailing digits still need a stable, URL-safe media name.
    return match.group(1) if match else str(zlib.crc32(video_id.encode()))


def base_record(
    video_id: str, created_at: str, status: int, name: str, final: bool
) -> dict[str, Any]:
    number = number_of(video_id)
    record = dict(EXAMPLE_RECORD)
    record.update(
        video_id=video_id,
        created_at=created_at,
        video_status=status,
        video_status_name=name,
        video_status_final=final,
        url="",
        queue_data={"queue_time": 1, "queue_count": 0},
        first_frame=f"https://media.example/{number}.jpg",
        prompt=f"simulated video {number}",
        model="v3",
        duration=5,
        video_duration=5,
        output_width=1280,
        output_height=720,
    )
    return record


# The record each two-phase scenario shows between A and D, and each failure's final record:
# one table, so the single-video endpoint and the list can never disagree about them.
MIDDLE_RECORDS: dict[str, tuple[int, str, bool]] = {
    "generating": (10, "GENERATING", False),
    "queuedfinal": (5, "QUEUED", True),
    "nourl": (1, "COMPLETED", True),
    "unknown": (42, "MYSTERY", False),
}


FAILURE_RECORDS: dict[str, tuple[int, str]] = {
    "failed": (8, "FAILED"),
    "moderated": (7, "MODERATED"),
}


def completed_record(moment: Moment) -> dict[str, Any]:
    record = base_record(moment.video_id, moment.created_at, 1, "COMPLETED", True)
    record["url"] = f"https://media.example/{number_of(moment.video_id)}.mp4"
    return record


# How deep the "deep" scenario nests one field: about 1 KB of brackets, which once exhausted
# the stack of a recursive cleaner.
DEEP_NESTING = 500


# What the "badurl" scenario offers as a COMPLETED video's url, in turn.
BAD_MEDIA_URLS = (
    "javascript:alert(1)",
    "http://media.example/plain.mp4",
    "data:video/mp4;base64,AAAA",
)


def hostile_final_record(name: str, moment: Moment) -> dict[str, Any]:
    """The final record of a hostile-record scenario: a COMPLETED record with one field nested
    DEEP_NESTING levels deep (deep), echoing the token (echo), or with a url that is not https
    (badurl, never fixed: the video never really completes)."""
    record = completed_record(moment)
    if name == "deep":
        nested: Any = "bottom"
        for _ in range(DEEP_NESTING):
            nested = [nested]
        record["nested"] = nested
    elif name == "echo":
        token = moment.token
        record["prompt"] = f"a cat, and the token {token}"
        record["first_frame"] += "?t=" + quote(token, safe="")
        record["debug"] = {"authorization": f"Bearer {token}", f"seen-{token}": [token]}
    elif name == "badurl":
        record["url"] = BAD_MEDIA_URLS[(moment.ordinal - 1) % len(BAD_MEDIA_URLS)]
    return record


def weird_record(moment: Moment, status: str, final: object, url: str) -> dict[str, Any]:
    """A record as a sloppy upstream might send it: numbers as strings, nulls where objects
    are documented, fields nobody has seen before."""
    record = base_record(moment.video_id, moment.created_at, 0, "", False)
    record.update(
        video_status=status,
        video_status_final=final,
        video_status_name=None,
        url=url,
        queue_data=None,
        lip_sync=None,
        customer_paths=None,
        output_width="1280",
        output_height=None,
        duration="5.0",
        created_at="not a date",
        brand_new_field={"nested": [1, None, "x"]},
        another_new_field=None,
    )
    return record


def _in_progress_record(moment: Moment, status: int, name: str, final: bool) -> dict[str, Any]:
    record = base_record(moment.video_id, moment.created_at, status, name, final)
    # Past its queue (or never queued): nothing left to wait for in line.
    record["queue_data"] = {"queue_time": 0, "queue_count": 0}
    return record


def _generating_record(moment: Moment) -> dict[str, Any]:
    return _in_progress_record(moment, 10, "GENERATING", False)


def _queued_record(moment: Moment, ahead: int) -> dict[str, Any]:
    # Documented as final on the videos page although the video is only waiting.
    record = _in_progress_record(moment, 5, "QUEUED", True)
    queue_time = math.ceil(moment.params["Q"] - moment.elapsed)
    record["queue_data"] = {"queue_time": queue_time, "queue_count": ahead}
    return record


def in_queue(scenario: Scenario, elapsed: float) -> bool:
    return scenario.name == "queued" and elapsed < scenario.params["Q"]


def list_view(scenario: Scenario, moment: Moment, ahead: int) -> dict[str, Any] | None:
    """The entry the list shows for one video (None: not listed); ``ahead`` counts the
    account's queued videos created before it. Per-request faults do not apply here."""
    name, elapsed, params = scenario.name, moment.elapsed, scenario.params
    if name == "rejected" or (name == "deleted" and elapsed >= params["D"]):
        return None
    if in_queue(scenario, elapsed):
        return _queued_record(moment, ahead)
    # Before A (two-phase scenarios) or D (the rest) a listed video is simply generating.
    if name in ("never", "deleted") or elapsed < params.get("A", params["D"]):
        return _generating_record(moment)
    if name in MIDDLE_RECORDS and elapsed < params["D"]:
        return base_record(moment.video_id, moment.created_at, *MIDDLE_RECORDS[name])
    if name in FAILURE_RECORDS:
        return base_record(moment.video_id, moment.created_at, *FAILURE_RECORDS[name], True)
    if name in ("deep", "echo", "badurl"):
        return hostile_final_record(name, moment)
    return completed_record(moment)


def brief(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key in _BRIEF_FIELDS}


def iso_utc(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def iso_utc_millis(wall: float) -> str:
    millis = int(wall * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{millis:03d}Z"


def minutes_seconds(seconds: float) -> str:
    whole = max(int(seconds), 0)
    return f"{whole // 60:02d}:{whole % 60:02d}"

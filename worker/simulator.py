"""A loopback fake of useapi.net's PixVerse endpoints: one video, account lists, the scheduler."""

from __future__ import annotations

import json
import math
import re
import select
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote

NOT_YET_MESSAGE = "The video was deleted, not found, or is still processing."
CLIENT_CLOSED = 499  # logged for a request whose client hung up before the answer (nginx's code)
DELETED_MESSAGE = "The original video has been deleted"

_ENDPOINT_PREFIX = ["", "v2", "pixverse", "videos"]
_SCHEDULER_PREFIX = ["", "v2", "pixverse", "scheduler"]
_JSON = "application/json; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_LIST_SHAPES = ("full", "brief")
_LIST_PAGINGS = ("plain", "paged")
# The key a scheduler item keeps its id under: the current docs, an earlier page, /available.
_SCHEDULER_SHAPES = ("id", "videoId", "video_id")
_SCHEDULER_FAULTS = ("garbage", "object")
# Jobs an account may run at once, as GET /scheduler/available reports it.
_MAX_JOBS = 10
_DEFAULT_LIMIT, _MAX_LIMIT = 40, 100
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
_EXAMPLE_RECORD: dict[str, Any] = {
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

# Parameter names per scenario, in the order they follow the name in the tag.
# N counts requests (integer); A, D and S are seconds (decimals allowed).
_SCENARIO_PARAMS: dict[str, tuple[str, ...]] = {
    "completed": ("D",),
    "generating": ("A", "D"),
    "failed": ("D",),
    "moderated": ("D",),
    "deleted": ("D",),
    "rejected": (),
    "ratelimit": ("N", "D"),
    "retryafter": ("N", "S", "D"),
    "errors": ("N", "D"),
    "slow": ("N", "S", "D"),
    "garbage": ("N", "D"),
    "queuedfinal": ("A", "D"),
    "nourl": ("A", "D"),
    "unknown": ("A", "D"),
    "hostile": ("N", "D"),
    "queued": ("Q", "D"),
    "deep": ("D",),
    "echo": ("D",),
    "badurl": ("D",),
    "never": (),
}
_COUNT_RE = re.compile(r"\d+")
_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")
# The tag is whatever sits between a "+" and the "@" of the email inside the id.
_TAG_RE = re.compile(r"\+([^+@]*)@")
_NUMBER_RE = re.compile(r":(\d+)$")
# The account a video belongs to is the email inside its id; only such ids are ever listed.
_ACCOUNT_RE = re.compile(r"-pixverse:(?P<email>.+?)-(?:video|image):(?P<number>\d+)$")
_IMAGE_RE = re.compile(r"-image:[^:]*$")
_INTEGER_RE = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class LoggedRequest:
    """One request the simulator answered.

    ``started`` is its arrival and ``finished`` the moment its answer was about to be written,
    both ``time.monotonic()`` values.
    """

    video_id: str | None
    path: str
    status: int
    started: float
    finished: float
    authorized: bool
    # "video" (one video), "list" (an account's videos), "scheduler" (either scheduler read)
    # or "other"
    kind: str = "video"
    email: str | None = None  # the decoded email parameter of a list request


@dataclass(frozen=True)
class SchedulerRead:
    """One scheduler request the simulator answered, and the ids its answer listed."""

    at: float  # time.time() when answered
    status: int
    ids: tuple[str, ...]  # ids listed in that answer; () for anything but a 200 listing


@dataclass(frozen=True)
class _Scenario:
    name: str
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()
    extra_delay: float = 0.0
    stream_size: int = 0  # send this many bytes of padding after ``body``, in chunks
    reset: bool = False  # drop the connection (TCP reset) instead of answering


@dataclass(frozen=True)
class _Moment:
    """What a scenario needs to know to answer one request for one id."""

    video_id: str
    elapsed: float
    ordinal: int
    created_at: str
    params: dict[str, float]
    token: str = ""  # the token the simulator accepts, for a scenario that echoes it


@dataclass
class _Seen:
    first_seen: float
    created_at: str
    started_wall: float  # time.time() at first_seen, for the scheduler's "started"
    count: int = 0
    listed: bool = True  # False: never on its account's list (created with listed=False)
    scheduled: bool = True  # False: made on the website, never on the scheduler


@dataclass(frozen=True)
class _Route:
    """Which endpoint a request path names."""

    kind: str
    video_id: str | None = None
    query: dict[str, list[str]] = field(default_factory=dict)  # the list's parameters
    available: bool = False  # the scheduler's /available form


@dataclass(frozen=True)
class _Call:
    seq: int
    epoch: int
    route: _Route
    email: str | None
    path: str
    started: float
    authorized: bool
    answer: _Answer
    delay: float
    listed_ids: tuple[str, ...] = ()  # what a scheduler answer lists


def make_id(scenario: str, n: int, user: int = 1, kind: str = "video") -> str:
    """Build a useapi.net-shaped id whose email tag names the scenario the simulator plays."""
    return f"user:{user}-pixverse:sim+{scenario}@example.com-{kind}:{n}"


def _parse_param(name: str, raw: str) -> float:
    pattern = _COUNT_RE if name == "N" else _SECONDS_RE
    if not pattern.fullmatch(raw):
        raise ValueError(f"parameter {name} must be a non-negative number, got {raw!r}")
    return float(raw)


def _parse_scenario(text: str, default_delay: float) -> _Scenario:
    """Parse ``name_p1_p2`` into a scenario; a missing trailing D takes its default."""
    name, *raw = text.strip().lower().split("_")
    names = _SCENARIO_PARAMS.get(name)
    if names is None:
        raise ValueError(f"unknown scenario {name!r}")
    optional_d = 1 if names[-1:] == ("D",) else 0
    if not len(names) - optional_d <= len(raw) <= len(names):
        raise ValueError(f"scenario {name!r} takes parameters {'_'.join(names) or 'none'}")
    params = {key: _parse_param(key, value) for key, value in zip(names, raw, strict=False)}
    if optional_d and "D" not in params:
        # A bare "deleted" means gone from the first request; others wait the default delay.
        params["D"] = 0.0 if name == "deleted" else default_delay
    if "Q" in params and params["Q"] > params["D"]:
        raise ValueError("Q must not exceed D")
    return _Scenario(name, params)


def _scenario_from_id(video_id: str, default_delay: float) -> _Scenario:
    match = _TAG_RE.search(video_id)
    if match is not None:
        try:
            return _parse_scenario(match.group(1), default_delay)
        except ValueError:
            pass  # an ordinary email tag (john+work@...) is not a script: use the default
    return _Scenario("completed", {"D": default_delay})


def _final_after(scenario: _Scenario) -> float | None:
    """Seconds after first sight at which the scenario reaches its true final state."""
    if scenario.name in ("never", "rejected"):
        return None
    return scenario.params["D"]


def _number_of(video_id: str) -> str:
    match = _NUMBER_RE.search(video_id)
    # Ids without trailing digits still need a stable, URL-safe media name.
    return match.group(1) if match else str(zlib.crc32(video_id.encode()))


def _iso_utc(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def _iso_utc_millis(wall: float) -> str:
    millis = int(wall * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{millis:03d}Z"


def _minutes_seconds(seconds: float) -> str:
    whole = max(int(seconds), 0)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _json_answer(status: int, payload: object) -> _Answer:
    return _Answer(status, json.dumps(payload, ensure_ascii=False).encode())


def _html_answer(status: int) -> _Answer:
    phrase = f"{status} {HTTPStatus(status).phrase}"
    body = f"<html><head><title>{phrase}</title></head><body><h1>{phrase}</h1></body></html>"
    return _Answer(status, body.encode(), _HTML)


_UNAUTHORIZED = _json_answer(401, {"error": "Unauthorized", "code": 401})
_NOT_FOUND = _json_answer(404, {"error": "Not found"})
_NOT_YET = _json_answer(404, {"error": NOT_YET_MESSAGE})
_DELETED = _json_answer(404, {"error": DELETED_MESSAGE})
_REJECTED = _json_answer(400, {"error": "Invalid video_id", "code": 400})
_RATE_LIMITED = _json_answer(429, {"error": "Too many requests", "code": 429})


def _record(video_id: str, created_at: str, status: int, name: str, final: bool) -> dict[str, Any]:
    number = _number_of(video_id)
    record = dict(_EXAMPLE_RECORD)
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
_MIDDLE_RECORDS: dict[str, tuple[int, str, bool]] = {
    "generating": (10, "GENERATING", False),
    "queuedfinal": (5, "QUEUED", True),
    "nourl": (1, "COMPLETED", True),
    "unknown": (42, "MYSTERY", False),
}
_FAILURE_RECORDS: dict[str, tuple[int, str]] = {
    "failed": (8, "FAILED"),
    "moderated": (7, "MODERATED"),
}


def _record_answer(moment: _Moment, status: int, name: str, final: bool) -> _Answer:
    return _json_answer(200, _record(moment.video_id, moment.created_at, status, name, final))


def _completed_record(moment: _Moment) -> dict[str, Any]:
    record = _record(moment.video_id, moment.created_at, 1, "COMPLETED", True)
    record["url"] = f"https://media.example/{_number_of(moment.video_id)}.mp4"
    return record


def _completed(moment: _Moment) -> _Answer:
    return _json_answer(200, _completed_record(moment))


# How deep the "deep" scenario nests one field: about 1 KB of brackets, which once exhausted
# the stack of a recursive cleaner.
DEEP_NESTING = 500
# What the "badurl" scenario offers as a COMPLETED video's url, in turn.
BAD_MEDIA_URLS = (
    "javascript:alert(1)",
    "http://media.example/plain.mp4",
    "data:video/mp4;base64,AAAA",
)


def _hostile_final_record(name: str, moment: _Moment) -> dict[str, Any]:
    """The final record of a hostile-record scenario: a COMPLETED record with one field nested
    DEEP_NESTING levels deep (deep), echoing the token (echo), or with a url that is not https
    (badurl, never fixed: the video never really completes)."""
    record = _completed_record(moment)
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


def _hostile_final(moment: _Moment, name: str) -> _Answer:
    if moment.elapsed < moment.params["D"]:
        return _NOT_YET
    return _json_answer(200, _hostile_final_record(name, moment))


def _completed_after_d(moment: _Moment) -> _Answer:
    return _completed(moment) if moment.elapsed >= moment.params["D"] else _NOT_YET


def _final_after_d(status: int, name: str) -> Callable[[_Moment], _Answer]:
    def respond(moment: _Moment) -> _Answer:
        if moment.elapsed < moment.params["D"]:
            return _NOT_YET
        return _record_answer(moment, status, name, True)

    return respond


def _middle_phase(status: int, name: str, final: bool) -> Callable[[_Moment], _Answer]:
    """Not-yet until A, then the given record until D, then COMPLETED."""

    def respond(moment: _Moment) -> _Answer:
        if moment.elapsed < moment.params["A"]:
            return _NOT_YET
        if moment.elapsed < moment.params["D"]:
            return _record_answer(moment, status, name, final)
        return _completed(moment)

    return respond


def _first_n(special: Callable[[_Moment], _Answer]) -> Callable[[_Moment], _Answer]:
    """The first N requests get ``special``; later ones behave like completed_D."""

    def respond(moment: _Moment) -> _Answer:
        if moment.ordinal <= moment.params["N"]:
            return special(moment)
        return _completed_after_d(moment)

    return respond


def _deleted(moment: _Moment) -> _Answer:
    return _DELETED if moment.elapsed >= moment.params["D"] else _NOT_YET


def _retry_after(moment: _Moment) -> _Answer:
    seconds = f"{moment.params['S']:g}"
    return replace(_RATE_LIMITED, headers=(("Retry-After", seconds),))


def _server_error(moment: _Moment) -> _Answer:
    status = (500, 502, 503, 504)[(moment.ordinal - 1) % 4]
    if status == 500:
        return _json_answer(500, {"error": "Internal Server Error", "code": 500})
    # Gateways in front of an API answer HTML, which a client must not try to parse as JSON.
    return _html_answer(status)


def _slow(moment: _Moment) -> _Answer:
    return replace(_completed_after_d(moment), extra_delay=moment.params["S"])


def _garbage(moment: _Moment) -> _Answer:
    index = (moment.ordinal - 1) % 5
    if index == 0:
        return _Answer(200, b"<html>oops</html>", _HTML)
    if index == 1:
        return _Answer(200, b"[1,2]")
    if index == 2:
        return _Answer(200, b'{"video_id": "us')
    if index == 3:
        other = f"user:0-pixverse:other@example.com-video:{_number_of(moment.video_id)}"
        return _completed(replace(moment, video_id=other))
    return _Answer(200, b'"ok"')


HUGE_BODY = 50 * 1024 * 1024


def _weird_record(moment: _Moment, status: str, final: object, url: str) -> dict[str, Any]:
    """A record as a sloppy upstream might send it: numbers as strings, nulls where objects
    are documented, fields nobody has seen before."""
    record = _record(moment.video_id, moment.created_at, 0, "", False)
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


def _hostile(moment: _Moment) -> _Answer:
    index = (moment.ordinal - 1) % 5
    if index == 0:  # a 50 MB body, streamed: the client must cap it, not hold it
        return _Answer(200, b'{"video_id": "', stream_size=HUGE_BODY)
    if index == 1:
        return _Answer(0, b"", reset=True)
    if index == 2:  # a record, but labelled as plain text
        record = _weird_record(moment, "10", False, "")
        return _Answer(200, json.dumps(record).encode(), "text/plain; charset=utf-8")
    if index == 3:
        return _json_answer(200, _weird_record(moment, "10", "false", ""))
    return _json_answer(200, _weird_record(moment, "77", False, ""))  # a status never seen


def _hostile_then_weird_completion(moment: _Moment) -> _Answer:
    if moment.ordinal <= moment.params["N"]:
        return _hostile(moment)
    if moment.elapsed < moment.params["D"]:
        return _NOT_YET
    url = f"https://media.example/{_number_of(moment.video_id)}.mp4"
    return _json_answer(200, _weird_record(moment, "1", "true", url))


_RESPONDERS: dict[str, Callable[[_Moment], _Answer]] = {
    "completed": _completed_after_d,
    "generating": _middle_phase(*_MIDDLE_RECORDS["generating"]),
    "failed": _final_after_d(*_FAILURE_RECORDS["failed"]),
    "moderated": _final_after_d(*_FAILURE_RECORDS["moderated"]),
    "deleted": _deleted,
    "rejected": lambda moment: _REJECTED,
    "ratelimit": _first_n(lambda moment: _RATE_LIMITED),
    "retryafter": _first_n(_retry_after),
    "errors": _first_n(_server_error),
    "slow": _first_n(_slow),
    "garbage": _first_n(_garbage),
    "queuedfinal": _middle_phase(*_MIDDLE_RECORDS["queuedfinal"]),
    "nourl": _middle_phase(*_MIDDLE_RECORDS["nourl"]),
    "unknown": _middle_phase(*_MIDDLE_RECORDS["unknown"]),
    "hostile": _hostile_then_weird_completion,
    # The queue only shows in the list; one video at a time it is just not-yet until D.
    "queued": _completed_after_d,
    "deep": lambda moment: _hostile_final(moment, "deep"),
    "echo": lambda moment: _hostile_final(moment, "echo"),
    "badurl": lambda moment: _hostile_final(moment, "badurl"),
    "never": lambda moment: _NOT_YET,
}


def _in_progress_record(moment: _Moment, status: int, name: str, final: bool) -> dict[str, Any]:
    record = _record(moment.video_id, moment.created_at, status, name, final)
    # Past its queue (or never queued): nothing left to wait for in line.
    record["queue_data"] = {"queue_time": 0, "queue_count": 0}
    return record


def _generating_record(moment: _Moment) -> dict[str, Any]:
    return _in_progress_record(moment, 10, "GENERATING", False)


def _queued_record(moment: _Moment, ahead: int) -> dict[str, Any]:
    # Documented as final on the videos page although the video is only waiting.
    record = _in_progress_record(moment, 5, "QUEUED", True)
    queue_time = math.ceil(moment.params["Q"] - moment.elapsed)
    record["queue_data"] = {"queue_time": queue_time, "queue_count": ahead}
    return record


def _in_queue(scenario: _Scenario, elapsed: float) -> bool:
    return scenario.name == "queued" and elapsed < scenario.params["Q"]


def _list_view(scenario: _Scenario, moment: _Moment, ahead: int) -> dict[str, Any] | None:
    """The entry the list shows for one video (None: not listed); ``ahead`` counts the
    account's queued videos created before it. Per-request faults do not apply here."""
    name, elapsed, params = scenario.name, moment.elapsed, scenario.params
    if name == "rejected" or (name == "deleted" and elapsed >= params["D"]):
        return None
    if _in_queue(scenario, elapsed):
        return _queued_record(moment, ahead)
    # Before A (two-phase scenarios) or D (the rest) a listed video is simply generating.
    if name in ("never", "deleted") or elapsed < params.get("A", params["D"]):
        return _generating_record(moment)
    if name in _MIDDLE_RECORDS and elapsed < params["D"]:
        return _record(moment.video_id, moment.created_at, *_MIDDLE_RECORDS[name])
    if name in _FAILURE_RECORDS:
        return _record(moment.video_id, moment.created_at, *_FAILURE_RECORDS[name], True)
    if name in ("deep", "echo", "badurl"):
        return _hostile_final_record(name, moment)
    return _completed_record(moment)


def _route(raw_path: str) -> _Route:
    """Which endpoint the path names: one video (with its decoded id), the list, or neither."""
    path, _, rest = raw_path.partition("?")
    path = path.split("#", 1)[0]
    # parse_qs decodes like any HTTP server: %2B is "+", a raw "+" is a space.
    query = parse_qs(rest.split("#", 1)[0], keep_blank_values=True)
    # Split before decoding so an encoded "/" (%2F) never creates or removes a segment.
    segments = [unquote(segment) for segment in path.split("/")]
    if segments[:4] == _SCHEDULER_PREFIX:
        tail = segments[4:]
        if tail in ([], [""]):
            return _Route("scheduler")
        if tail in (["available"], ["available", ""]):
            return _Route("scheduler", available=True)
        return _Route("other")
    if segments[:4] != _ENDPOINT_PREFIX or len(segments) > 5:
        return _Route("other")
    if len(segments) == 4 or not segments[4]:
        return _Route("list", query=query)
    return _Route("video", video_id=segments[4])


def _query_value(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _bad_request(message: str) -> _Answer:
    return _json_answer(400, {"error": message, "code": 400})


def _list_window(query: dict[str, list[str]]) -> tuple[int, int] | _Answer:
    """(limit, offset) from the query, or the 400 answer naming the bad parameter."""
    limit_text = _query_value(query, "limit")
    offset_text = _query_value(query, "offset")
    limit = _DEFAULT_LIMIT
    if limit_text is not None:
        if not _INTEGER_RE.fullmatch(limit_text) or not 1 <= int(limit_text) <= _MAX_LIMIT:
            return _bad_request(f"Parameter limit must be an integer from 1 to {_MAX_LIMIT}")
        limit = int(limit_text)
    offset = 0
    if offset_text is not None:
        if not _INTEGER_RE.fullmatch(offset_text) or int(offset_text) < 0:
            return _bad_request("Parameter offset must be a non-negative integer")
        offset = int(offset_text)
    return limit, offset


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key in _BRIEF_FIELDS}


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


class Simulator:
    """Fake upstream: answers each video id according to the scenario named in its email tag.

    ``GET /v2/pixverse/videos/?email=&limit=&offset=`` lists the videos seen or ``create()``d
    for that account (the email inside their ids), newest first, each as it stands when the
    list request arrives; ``list_shape`` and ``list_paging`` pick a reading of the upstream's
    documentation. Listing never starts a clock nor counts toward any id's N.

    ``GET /v2/pixverse/scheduler/`` lists, token-wide, every id started "through the API" whose
    clock runs and whose by-id record is not final yet (a ``never`` id forever, a ``rejected``
    one never), oldest first; ``scheduler_shape`` names the key its items keep the id under.
    ``GET /v2/pixverse/scheduler/available`` wraps the same items (keyed ``video_id``) with each
    account's capacity. Ids created with ``scheduled=False`` (made on the website) never show,
    nor, when ``scheduled_when_requested`` is False, ids first seen by a by-id request.

    The scenario comes from the id itself (``...pixverse:sim+generating_2_6@example.com...``), so
    separate processes can script ids without talking to the simulator; ``script()`` overrides it.
    An id's clock starts at ``create()`` or at the FIRST authorized endpoint request the simulator
    sees for it (a 401 does not start it), and request counts (N) count only those requests.
    Each answer describes the state at the moment the request arrived, before ``latency`` is
    waited.
    ``completed_at`` is when the id reaches its true final state (COMPLETED, FAILED, MODERATED,
    deleted): anomalous records that merely claim to be final (queuedfinal, nourl) do not count.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "sim-token",
        latency: float = 0.0,
        default_delay: float = 5.0,
        list_shape: str = "full",
        list_paging: str = "plain",
        scheduler_shape: str = "id",
        scheduled_when_requested: bool = True,
    ) -> None:
        self._host = host
        self._port = port
        self._token = token
        self._latency = _non_negative("latency", latency)
        self._default_delay = _non_negative("default_delay", default_delay)
        self._list_shape = _one_of("list_shape", list_shape, _LIST_SHAPES)
        self._list_paging = _one_of("list_paging", list_paging, _LIST_PAGINGS)
        self._list_failure: int | None = None
        self._scheduler_shape = _one_of("scheduler_shape", scheduler_shape, _SCHEDULER_SHAPES)
        self._scheduled_when_requested = bool(scheduled_when_requested)
        self._scheduler_failure: int | str | None = None
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        # The videos of each account (casefolded email), so a list answer reads only its own
        # account's videos, not every video seen: 85 ms a list request at 100,000 videos.
        self._by_account: dict[str, list[tuple[str, int]]] = {}
        self._scripts: dict[str, _Scenario] = {}
        self._in_flight: dict[str, int] = {}
        self._connections: set[socket.socket] = set()
        self._overlaps = 0
        self._log: dict[int, LoggedRequest] = {}
        self._scheduler_log: dict[int, SchedulerRead] = {}
        # Scheduled ids that may still be executing, in clock-start order; finished ones are
        # pruned by the next scheduler read, so a read costs what is running, not all ever seen.
        self._executing: dict[str, None] = {}
        self._next_seq = 0
        self._epoch = 0
        self._revoked_until = float("-inf")
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; a restart reuses the first bound port."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = _Server((self._host, self._port), self)
        # Keep the port so base_url stays valid across stop()/start() (upstream outage tests).
        self._port = server.server_port
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},  # short poll so stop() returns quickly
            name=f"pixverse-simulator-{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, wake sleeping answers and drop kept-alive connections."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.server_close()
        self._drop_connections()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._port == 0:
            raise RuntimeError("the port is chosen by start(); start the simulator first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    # -- run-time settings ---------------------------------------------------------------------

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        value = _non_negative("latency", seconds)
        with self._lock:
            self._latency = value

    @property
    def token(self) -> str:
        with self._lock:
            return self._token

    @token.setter
    def token(self, value: str) -> None:
        with self._lock:
            self._token = value

    @property
    def default_delay(self) -> float:
        return self._default_delay

    @property
    def list_shape(self) -> str:
        """``"full"``: list entries are whole records; ``"brief"``: only the status fields."""
        with self._lock:
            return self._list_shape

    @list_shape.setter
    def list_shape(self, value: str) -> None:
        shape = _one_of("list_shape", value, _LIST_SHAPES)
        with self._lock:
            self._list_shape = shape

    @property
    def list_paging(self) -> str:
        """``"plain"``: the list body is ``{"data": [...]}``; ``"paged"`` adds ``has_more`` and
        ``next_offset``."""
        with self._lock:
            return self._list_paging

    @list_paging.setter
    def list_paging(self, value: str) -> None:
        paging = _one_of("list_paging", value, _LIST_PAGINGS)
        with self._lock:
            self._list_paging = paging

    @property
    def scheduler_shape(self) -> str:
        """The key scheduler items keep their id under: ``"id"`` (the current docs),
        ``"videoId"`` (an earlier page) or ``"video_id"`` (as in /available)."""
        with self._lock:
            return self._scheduler_shape

    @scheduler_shape.setter
    def scheduler_shape(self, value: str) -> None:
        shape = _one_of("scheduler_shape", value, _SCHEDULER_SHAPES)
        with self._lock:
            self._scheduler_shape = shape

    @property
    def scheduled_when_requested(self) -> bool:
        """Whether an id first seen by a by-id request (not ``create()``d) counts as started
        through the API, and so shows on the scheduler; applies to ids first seen from then on."""
        with self._lock:
            return self._scheduled_when_requested

    @scheduled_when_requested.setter
    def scheduled_when_requested(self, value: bool) -> None:
        with self._lock:
            self._scheduled_when_requested = bool(value)

    def fail_scheduler(self, fault: int | str | None) -> None:
        """Answer every (authorized) scheduler read with ``fault``: an HTTP error status and an
        error body, ``"garbage"`` (a 200 that is not JSON) or ``"object"`` (a 200 holding
        ``{"unexpected": true}``); None answers truly again."""
        if isinstance(fault, bool) or not (
            fault is None
            or (isinstance(fault, int) and 400 <= fault <= 599)
            or fault in _SCHEDULER_FAULTS
        ):
            raise ValueError(
                f"fault must be an HTTP error status, {' or '.join(_SCHEDULER_FAULTS)}"
                f" or None, got {fault!r}"
            )
        with self._lock:
            self._scheduler_failure = fault

    def fail_lists(self, status: int | None) -> None:
        """Answer every (authorized) list request with ``status`` and an error body, e.g. 400
        for an account the list does not work for or 503 for an outage; None lists again."""
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status, got {status!r}")
        with self._lock:
            self._list_failure = status

    def unauthorized_for(self, seconds: float) -> None:
        """Answer 401 to every request for the next ``seconds`` (a revoked token)."""
        until = time.monotonic() + _non_negative("seconds", seconds)
        with self._lock:
            self._revoked_until = until

    def script(self, video_id: str, scenario: str) -> None:
        """Override the scenario of one id; raises ValueError on a malformed scenario.

        The id's clock and request count are kept: scripting does not restart it.
        """
        parsed = _parse_scenario(scenario, self._default_delay)
        with self._lock:
            self._scripts[video_id] = parsed
            seen = self._seen.get(video_id)
            if seen is not None and seen.scheduled:
                # A new scenario may run longer than the old one: back on the scheduler.
                self._executing[video_id] = None

    def create(self, video_id: str, *, listed: bool = True, scheduled: bool = True) -> None:
        """Register a video as created now (POST /videos/create): its clock starts as a first
        request would start it, but nothing is logged and its request count stays 0.

        ``listed=False`` keeps it off its account's list for good, as a video beyond the pages
        a tracker reads would be: it is then only seen by id. ``scheduled=False`` makes it a
        video started on the website: the scheduler never lists it. Creating an id already seen
        or created changes nothing.
        """
        self.create_many([video_id], listed=listed, scheduled=scheduled)

    def create_many(
        self, video_ids: Iterable[str], *, listed: bool = True, scheduled: bool = True
    ) -> None:
        """``create()`` each id, in the given order (which is also their creation order)."""
        if isinstance(video_ids, str):
            # A bare string is an iterable of one-letter ids: surely not what was meant.
            raise TypeError("create_many() takes an iterable of ids, not one id")
        with self._lock:
            for video_id in video_ids:
                if video_id not in self._seen:
                    self._first_sight_locked(video_id, time.monotonic(), scheduled=scheduled)
                    self._seen[video_id].listed = listed

    def reset(self) -> None:
        """Forget the request log, overlap count, per-id clocks and created videos; scripts and
        settings stay.

        Requests still in flight during a reset are not logged when they finish.
        """
        with self._lock:
            self._seen.clear()
            self._by_account.clear()
            self._log.clear()
            self._scheduler_log.clear()
            self._executing.clear()
            self._overlaps = 0
            self._epoch += 1

    # -- observations --------------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every answered request, in arrival order (a copy); ones cut off by stop() are omitted."""
        with self._lock:
            return [self._log[seq] for seq in sorted(self._log)]

    def requests_for(self, video_id: str) -> list[LoggedRequest]:
        return [entry for entry in self.requests if entry.video_id == video_id]

    def list_requests(self, email: str | None = None) -> list[LoggedRequest]:
        """List requests in arrival order: all of them, or those for one email (any case)."""
        wanted = None if email is None else email.casefold()
        return [
            entry
            for entry in self.requests
            if entry.kind == "list"
            and (wanted is None or (entry.email is not None and entry.email.casefold() == wanted))
        ]

    def scheduler_requests(self) -> list[SchedulerRead]:
        """Scheduler reads (either form) in arrival order, with what each answer listed."""
        with self._lock:
            return [self._scheduler_log[seq] for seq in sorted(self._scheduler_log)]

    def overlapping_requests(self) -> int:
        """How often a request arrived while another for the same id was still in flight."""
        with self._lock:
            return self._overlaps

    def completed_at(self, video_id: str) -> float | None:
        """``time.monotonic()`` at which the id turns final; None if never or not yet seen."""
        with self._lock:
            seen = self._seen.get(video_id)
            if seen is None:
                return None
            after = _final_after(self._scenario_locked(video_id))
            return None if after is None else seen.first_seen + after

    # -- request handling (called from handler threads) ---------------------------------------

    def _arrive(self, raw_path: str, authorization: str | None) -> _Call:
        route = _route(raw_path)
        email = _query_value(route.query, "email")
        with self._lock:
            started = time.monotonic()
            authorized = self._authorized_locked(authorization, started)
            if route.video_id is not None:
                self._enter_locked(route.video_id)
            answer, listed_ids = self._answer_locked(route, authorized, started)
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            return _Call(
                seq=seq,
                epoch=self._epoch,
                route=route,
                email=email,
                path=raw_path,
                started=started,
                authorized=authorized,
                answer=answer,
                delay=self._latency + answer.extra_delay,
                listed_ids=listed_ids,
            )

    def _depart(self, call: _Call, logged: bool, status: int | None = None) -> None:
        finished = time.monotonic()
        video_id = call.route.video_id
        with self._lock:
            if video_id is not None:
                self._in_flight[video_id] -= 1
                if not self._in_flight[video_id]:
                    del self._in_flight[video_id]
            if logged and call.epoch == self._epoch:
                answered = call.answer.status if status is None else status
                if call.route.kind == "scheduler":
                    # A client that hung up (499) was listed nothing: it never read the answer.
                    ids = call.listed_ids if answered == 200 else ()
                    self._scheduler_log[call.seq] = SchedulerRead(time.time(), answered, ids)
                self._log[call.seq] = LoggedRequest(
                    video_id=video_id,
                    path=call.path,
                    status=answered,
                    started=call.started,
                    finished=finished,
                    authorized=call.authorized,
                    kind=call.route.kind,
                    email=call.email,
                )

    def _authorized_locked(self, authorization: str | None, now: float) -> bool:
        if now < self._revoked_until:
            return False
        scheme, _, credentials = (authorization or "").partition(" ")
        # The auth scheme is case-insensitive (RFC 9110); the token itself is not.
        return scheme.lower() == "bearer" and credentials.strip() == self._token

    def _enter_locked(self, video_id: str) -> None:
        # Counted for every request to the endpoint, 401s included: overlap is a client habit.
        if self._in_flight.get(video_id, 0):
            self._overlaps += 1
        self._in_flight[video_id] = self._in_flight.get(video_id, 0) + 1

    def _answer_locked(
        self, route: _Route, authorized: bool, now: float
    ) -> tuple[_Answer, tuple[str, ...]]:
        """The answer, and the ids it lists when it is a scheduler listing."""
        if not authorized:
            return _UNAUTHORIZED, ()
        if route.kind == "scheduler":
            return self._scheduler_answer_locked(route.available, now)
        return self._by_path_answer_locked(route, now), ()

    def _by_path_answer_locked(self, route: _Route, now: float) -> _Answer:
        if route.kind == "list":
            return self._list_answer_locked(route.query, now)
        if route.video_id is None:
            return _NOT_FOUND
        video_id = route.video_id
        seen = self._first_sight_locked(video_id, now, scheduled=self._scheduled_when_requested)
        seen.count += 1
        scenario = self._scenario_locked(video_id)
        moment = _Moment(
            video_id=video_id,
            elapsed=now - seen.first_seen,
            ordinal=seen.count,
            created_at=seen.created_at,
            params=scenario.params,
            token=self._token,
        )
        return _RESPONDERS[scenario.name](moment)

    def _first_sight_locked(self, video_id: str, now: float, *, scheduled: bool) -> _Seen:
        seen = self._seen.get(video_id)
        if seen is None:
            wall = time.time()
            seen = self._seen[video_id] = _Seen(now, _iso_utc(wall), wall, scheduled=scheduled)
            if scheduled:
                self._executing[video_id] = None
            match = _ACCOUNT_RE.search(video_id)
            if match is not None:
                account = match.group("email").casefold()
                self._by_account.setdefault(account, []).append(
                    (video_id, int(match.group("number")))
                )
        return seen

    def _scheduler_answer_locked(
        self, available: bool, now: float
    ) -> tuple[_Answer, tuple[str, ...]]:
        failure = self._scheduler_failure
        if failure == "garbage":
            return _Answer(200, b"<html>scheduler hiccup</html>", _HTML), ()
        if failure == "object":
            return _json_answer(200, {"unexpected": True}), ()
        if isinstance(failure, int):
            body = {"error": f"scheduler failed ({failure})", "code": failure}
            return _json_answer(failure, body), ()
        running = self._running_locked(now)
        key = "video_id" if available else self._scheduler_shape
        items = [self._scheduler_item(video_id, seen, key, now) for video_id, seen in running]
        ids = tuple(video_id for video_id, _ in running)
        if not available:
            return _json_answer(200, items), ids
        counts: dict[str, int] = {}
        for video_id, _ in running:
            match = _ACCOUNT_RE.search(video_id)
            if match is not None:
                account = match.group("email").casefold()
                counts[account] = counts.get(account, 0) + 1
        capacity = []
        for account, videos in self._by_account.items():
            match = _ACCOUNT_RE.search(videos[0][0])
            email = match.group("email") if match is not None else account
            busy = counts.get(account, 0)
            capacity.append(
                {
                    "email": email,
                    "maxJobs": _MAX_JOBS,
                    "executing": busy,
                    "available": max(_MAX_JOBS - busy, 0),
                }
            )
        return _json_answer(200, {"executing": items, "available": capacity}), ids

    def _running_locked(self, now: float) -> list[tuple[str, _Seen]]:
        """The scheduled ids still executing at ``now``, oldest clock first; prunes the rest."""
        running: list[tuple[str, _Seen]] = []
        finished: list[str] = []
        for video_id in self._executing:
            seen = self._seen[video_id]
            scenario = self._scenario_locked(video_id)
            if scenario.name == "rejected":
                finished.append(video_id)
                continue
            after = _final_after(scenario)
            if after is not None and now - seen.first_seen >= after:
                finished.append(video_id)
                continue
            running.append((video_id, seen))
        for video_id in finished:
            del self._executing[video_id]
        # script() may put an id back out of order; clocks, not insertion, decide.
        running.sort(key=lambda job: job[1].first_seen)
        return running

    @staticmethod
    def _scheduler_item(video_id: str, seen: _Seen, key: str, now: float) -> dict[str, Any]:
        return {
            key: video_id,
            "type": "image" if _IMAGE_RE.search(video_id) else "video",
            "started": _iso_utc_millis(seen.started_wall),
            "elapsed": _minutes_seconds(now - seen.first_seen),
        }

    def _list_answer_locked(self, query: dict[str, list[str]], now: float) -> _Answer:
        if self._list_failure is not None:
            status = self._list_failure
            return _json_answer(status, {"error": f"list failed ({status})", "code": status})
        email = _query_value(query, "email")
        if not email:
            return _bad_request("Parameter email is required")
        window = _list_window(query)
        if isinstance(window, _Answer):
            return window
        limit, offset = window
        entries = self._account_entries_locked(email, now)
        page = entries[offset : offset + limit]
        if self._list_shape == "brief":
            page = [_brief(entry) for entry in page]
        body: dict[str, Any] = {"data": page}
        if self._list_paging == "paged":
            body.update(has_more=len(entries) > offset + limit, next_offset=offset + len(page))
        return _json_answer(200, body)

    def _account_entries_locked(self, email: str, now: float) -> list[dict[str, Any]]:
        """Every listed video of the account as it stands at ``now``, newest first."""
        videos: list[tuple[float, int, str, _Seen]] = []
        for video_id, number in self._by_account.get(email.casefold(), []):
            seen = self._seen[video_id]
            if seen.listed:
                videos.append((seen.first_seen, number, video_id, seen))
        videos.sort(key=lambda video: video[:2])
        entries: list[dict[str, Any]] = []
        queued = 0  # the account's videos still in line, created before the current one
        for first_seen, _, video_id, seen in videos:  # oldest first, so the queue adds up
            scenario = self._scenario_locked(video_id)
            moment = _Moment(
                video_id=video_id,
                elapsed=now - first_seen,
                ordinal=seen.count,
                created_at=seen.created_at,
                params=scenario.params,
                token=self._token,
            )
            entry = _list_view(scenario, moment, queued)
            if _in_queue(scenario, moment.elapsed):
                queued += 1
            if entry is not None:
                entries.append(entry)
        entries.reverse()
        return entries

    def _scenario_locked(self, video_id: str) -> _Scenario:
        scripted = self._scripts.get(video_id)
        return scripted or _scenario_from_id(video_id, self._default_delay)

    def _track_connection(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                # Wakes handler threads blocked on idle keep-alive reads, so a stopped
                # simulator really stops answering.
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.stopping = threading.Event()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up, or a stop() mid-answer, is normal here; real bugs still print.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so clients can keep connections alive as they would against the real API.
    protocol_version = "HTTP/1.1"
    server_version = "pixverse-simulator"

    def _server(self) -> _Server:
        server = self.server
        if not isinstance(server, _Server):
            raise TypeError("handler used outside the simulator's server")
        return server

    def setup(self) -> None:
        super().setup()
        self._server().simulator._track_connection(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server().simulator._track_connection(self.connection, False)

    def do_GET(self) -> None:
        self._discard_body()
        server = self._server()
        call = server.simulator._arrive(self.path, self.headers.get("Authorization"))
        cut_off, gone = True, False
        try:
            cut_off, gone = self._wait(call.delay)
        finally:
            # Logged before the bytes go out: once a client holds the answer, the log shows it,
            # and a next poll sent straight after it is not miscounted as an overlap.
            server.simulator._depart(
                call, logged=not cut_off, status=CLIENT_CLOSED if gone else None
            )
        if cut_off or gone:
            # A stopped upstream drops the connection; answering early would fake a fast reply.
            self.close_connection = True
            return
        self._send(call.answer)

    def _wait(self, delay: float) -> tuple[bool, bool]:
        """Sleep ``delay`` seconds; (stopped, client hung up). Like a real front end, a request
        whose client gave up (a timeout) ends there and is logged with status 499."""
        stopping = self._server().stopping
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            # An Event instead of time.sleep so stop() cuts long waits short.
            if stopping.wait(min(left, 0.05)):
                return True, False
            if self._client_gone():
                return False, True
        return False, False

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _discard_body(self) -> None:
        # A GET with a body would otherwise desynchronise the kept-alive connection.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > 0:
            self.rfile.read(length)

    def _send(self, answer: _Answer) -> None:
        if answer.reset:
            # SO_LINGER 0 makes close() send a TCP reset: the client sees "connection reset".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body) + answer.stream_size))
        for name, value in answer.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)
        left, chunk = answer.stream_size, b"x" * 65536
        while left > 0:  # never built whole: the simulator stays small too
            self.wfile.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        # Silenced: the simulator keeps its own request log, and stderr noise hides test output.
        return


def serve(
    host: str,
    port: int,
    token: str,
    latency: float,
    default_delay: float,
    *,
    list_shape: str = "full",
    list_paging: str = "plain",
    scheduler_shape: str = "id",
) -> None:
    """Run a simulator in the foreground until Ctrl-C; prints its base URL once listening."""
    simulator = Simulator(
        host,
        port,
        token,
        latency,
        default_delay,
        list_shape=list_shape,
        list_paging=list_paging,
        scheduler_shape=scheduler_shape,
    ).start()
    try:
        print(simulator.base_url, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the CLI command is meant to end
    finally:
        simulator.stop()

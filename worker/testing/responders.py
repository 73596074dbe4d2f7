"""The simulator's answers to one video by id: each scenario's responder, turning what a
request sees of its video (a ``Moment``) into the status, headers and body it gets."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus

from pixverse_tracker.testing.fake_records import (
    FAILURE_RECORDS,
    MIDDLE_RECORDS,
    base_record,
    completed_record,
    hostile_final_record,
    number_of,
    weird_record,
)
from pixverse_tracker.testing.scenarios import Moment

NOT_YET_MESSAGE = "The video was deleted, not found, or is still processing."

DELETED_MESSAGE = "The original video has been deleted"

JSON_TYPE = "application/json; charset=utf-8"

HTML_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    extra_delay: float = 0.0
    stream_size: int = 0  # send this many bytes of padding after ``body``, in chunks
    reset: bool = False  # drop the connection (TCP reset) instead of answering


def json_answer(status: int, payload: object) -> Answer:
    return Answer(status, json.dumps(payload, ensure_ascii=False).encode())


def html_answer(status: int) -> Answer:
    phrase = f"{status} {HTTPStatus(status).phrase}"
    body = f"<html><head><title>{phrase}</title></head><body><h1>{phrase}</h1></body></html>"
    return Answer(status, body.encode(), HTML_TYPE)


UNAUTHORIZED = json_answer(401, {"error": "Unauthorized", "code": 401})

NOT_FOUND = json_answer(404, {"error": "Not found"})

NOT_YET = json_answer(404, {"error": NOT_YET_MESSAGE})

DELETED = json_answer(404, {"error": DELETED_MESSAGE})

REJECTED = json_answer(400, {"error": "Invalid video_id", "code": 400})

RATE_LIMITED = json_answer(429, {"error": "Too many requests", "code": 429})


def bad_request(message: str) -> Answer:
    return json_answer(400, {"error": message, "code": 400})


def _record_answer(moment: Moment, status: int, name: str, final: bool) -> Answer:
    return json_answer(200, base_record(moment.video_id, moment.created_at, status, name, final))


def _completed(moment: Moment) -> Answer:
    return json_answer(200, completed_record(moment))


def _hostile_final(moment: Moment, name: str) -> Answer:
    if moment.elapsed < moment.params["D"]:
        return NOT_YET
    return json_answer(200, hostile_final_record(name, moment))


def _completed_after_d(moment: Moment) -> Answer:
    return _completed(moment) if moment.elapsed >= moment.params["D"] else NOT_YET


def _final_after_d(status: int, name: str) -> Callable[[Moment], Answer]:
    def respond(moment: Moment) -> Answer:
        if moment.elapsed < moment.params["D"]:
            return NOT_YET
        return _record_answer(moment, status, name, True)

    return respond


def _middle_phase(status: int, name: str, final: bool) -> Callable[[Moment], Answer]:
    """Not-yet until A, then the given record until D, then COMPLETED."""

    def respond(moment: Moment) -> Answer:
        if moment.elapsed < moment.params["A"]:
            return NOT_YET
        if moment.elapsed < moment.params["D"]:
            return _record_answer(moment, status, name, final)
        return _completed(moment)

    return respond


def _first_n(special: Callable[[Moment], Answer]) -> Callable[[Moment], Answer]:
    """The first N requests get ``special``; later ones behave like completed_D."""

    def respond(moment: Moment) -> Answer:
        if moment.ordinal <= moment.params["N"]:
            return special(moment)
        return _completed_after_d(moment)

    return respond


def _deleted(moment: Moment) -> Answer:
    return DELETED if moment.elapsed >= moment.params["D"] else NOT_YET


def _retry_after(moment: Moment) -> Answer:
    seconds = f"{moment.params['S']:g}"
    return replace(RATE_LIMITED, headers=(("Retry-After", seconds),))


def _server_error(moment: Moment) -> Answer:
    status = (500, 502, 503, 504)[(moment.ordinal - 1) % 4]
    if status == 500:
        return json_answer(500, {"error": "Internal Server Error", "code": 500})
    # Gateways in front of an API answer HTML, which a client must not try to parse as JSON.
    return html_answer(status)


def _slow(moment: Moment) -> Answer:
    return replace(_completed_after_d(moment), extra_delay=moment.params["S"])


def _garbage(moment: Moment) -> Answer:
    index = (moment.ordinal - 1) % 5
    if index == 0:
        return Answer(200, b"<html>oops</html>", HTML_TYPE)
    if index == 1:
        return Answer(200, b"[1,2]")
    if index == 2:
        return Answer(200, b'{"video_id": "us')
    if index == 3:
        other = f"user:0-pixverse:other@example.com-video:{number_of(moment.video_id)}"
        return _completed(replace(moment, video_id=other))
    return Answer(200, b'"ok"')


HUGE_BODY = 50 * 1024 * 1024


def _hostile(moment: Moment) -> Answer:
    index = (moment.ordinal - 1) % 5
    if index == 0:  # a 50 MB body, streamed: the client must cap it, not hold it
        return Answer(200, b'{"video_id": "', stream_size=HUGE_BODY)
    if index == 1:
        return Answer(0, b"", reset=True)
    if index == 2:  # a record, but labelled as plain text
        record = weird_record(moment, "10", False, "")
        return Answer(200, json.dumps(record).encode(), "text/plain; charset=utf-8")
    if index == 3:
        return json_answer(200, weird_record(moment, "10", "false", ""))
    return json_answer(200, weird_record(moment, "77", False, ""))  # a status never seen


def _hostile_then_weird_completion(moment: Moment) -> Answer:
    if moment.ordinal <= moment.params["N"]:
        return _hostile(moment)
    if moment.elapsed < moment.params["D"]:
        return NOT_YET
    url = f"https://media.example/{number_of(moment.video_id)}.mp4"
    return json_answer(200, weird_record(moment, "1", "true", url))


RESPONDERS: dict[str, Callable[[Moment], Answer]] = {
    "completed": _completed_after_d,
    "generating": _middle_phase(*MIDDLE_RECORDS["generating"]),
    "failed": _final_after_d(*FAILURE_RECORDS["failed"]),
    "moderated": _final_after_d(*FAILURE_RECORDS["moderated"]),
    "deleted": _deleted,
    "rejected": lambda moment: REJECTED,
    "ratelimit": _first_n(lambda moment: RATE_LIMITED),
    "retryafter": _first_n(_retry_after),
    "errors": _first_n(_server_error),
    "slow": _first_n(_slow),
    "garbage": _first_n(_garbage),
    "queuedfinal": _middle_phase(*MIDDLE_RECORDS["queuedfinal"]),
    "nourl": _middle_phase(*MIDDLE_RECORDS["nourl"]),
    "unknown": _middle_phase(*MIDDLE_RECORDS["unknown"]),
    "hostile": _hostile_then_weird_completion,
    # The queue only shows in the list; one video at a time it is just not-yet until D.
    "queued": _completed_after_d,
    "deep": lambda moment: _hostile_final(moment, "deep"),
    "echo": lambda moment: _hostile_final(moment, "echo"),
    "badurl": lambda moment: _hostile_final(moment, "badurl"),
    "never": lambda moment: NOT_YET,
}

"""The fake upstream's state and how it answers one request: per-id clocks and request counts,
each account's videos, the scheduler's running jobs, the request log. ``Simulator`` adds the
server, the scripting and fault switches, and the observations tests read."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from pixverse_tracker.testing.fake_records import (
    brief,
    in_queue,
    iso_utc,
    iso_utc_millis,
    list_view,
    minutes_seconds,
)
from pixverse_tracker.testing.responders import (
    HTML_TYPE,
    NOT_FOUND,
    RESPONDERS,
    UNAUTHORIZED,
    Answer,
    bad_request,
    json_answer,
)
from pixverse_tracker.testing.routes import (
    LoggedRequest,
    Route,
    SchedulerRead,
    list_window,
    query_value,
    route_of,
)
from pixverse_tracker.testing.scenarios import (
    Moment,
    Scenario,
    final_after,
    scenario_from_id,
)

CLIENT_CLOSED = 499  # logged for a request whose client hung up before the answer (nginx's code)

LIST_SHAPES = ("full", "brief")

LIST_PAGINGS = ("plain", "paged")

# The key a scheduler item keeps its id under: the current docs, an earlier page, /available.
SCHEDULER_SHAPES = ("id", "videoId", "video_id")

SCHEDULER_FAULTS = ("garbage", "object")

# Jobs an account may run at once, as GET /scheduler/available reports it.
_MAX_JOBS = 10

# The account a video belongs to is the email inside its id; only such ids are ever listed.
_ACCOUNT_RE = re.compile(r"-pixverse:(?P<email>.+?)-(?:video|image):(?P<number>\d+)$")

_IMAGE_RE = re.compile(r"-image:[^:]*$")


@dataclass
class _Seen:
    first_seen: float
    created_at: str
    started_wall: float  # time.time() at first_seen, for the scheduler's "started"
    count: int = 0
    listed: bool = True  # False: never on its account's list (created with listed=False)
    scheduled: bool = True  # False: made on the website, never on the scheduler


@dataclass(frozen=True)
class _Call:
    seq: int
    epoch: int
    route: Route
    email: str | None
    path: str
    started: float
    authorized: bool
    answer: Answer
    delay: float
    listed_ids: tuple[str, ...] = ()  # what a scheduler answer lists


def one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


class FakeUpstream:
    """What the fake upstream knows and how it answers; the handler threads call ``arrive``
    before waiting and ``depart`` after, ``track_connection`` as connections open and close."""

    def __init__(
        self,
        token: str,
        latency: float,
        default_delay: float,
        list_shape: str,
        list_paging: str,
        scheduler_shape: str,
        scheduled_when_requested: bool,
    ) -> None:
        self._token = token
        self._latency = non_negative("latency", latency)
        self._default_delay = non_negative("default_delay", default_delay)
        self._list_shape = one_of("list_shape", list_shape, LIST_SHAPES)
        self._list_paging = one_of("list_paging", list_paging, LIST_PAGINGS)
        self._list_failure: int | None = None
        self._scheduler_shape = one_of("scheduler_shape", scheduler_shape, SCHEDULER_SHAPES)
        self._scheduled_when_requested = bool(scheduled_when_requested)
        self._scheduler_failure: int | str | None = None
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        # The videos of each account (casefolded email), so a list answer reads only its own
        # account's videos, not every video seen: 85 ms a list request at 100,000 videos.
        self._by_account: dict[str, list[tuple[str, int]]] = {}
        self._scripts: dict[str, Scenario] = {}
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

    # -- request handling (called from handler threads) ---------------------------------------

    def arrive(self, raw_path: str, authorization: str | None) -> _Call:
        route = route_of(raw_path)
        email = query_value(route.query, "email")
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

    def depart(self, call: _Call, logged: bool, status: int | None = None) -> None:
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
        self, route: Route, authorized: bool, now: float
    ) -> tuple[Answer, tuple[str, ...]]:
        """The answer, and the ids it lists when it is a scheduler listing."""
        if not authorized:
            return UNAUTHORIZED, ()
        if route.kind == "scheduler":
            return self._scheduler_answer_locked(route.available, now)
        return self._by_path_answer_locked(route, now), ()

    def _by_path_answer_locked(self, route: Route, now: float) -> Answer:
        if route.kind == "list":
            return self._list_answer_locked(route.query, now)
        if route.video_id is None:
            return NOT_FOUND
        video_id = route.video_id
        seen = self._first_sight_locked(video_id, now, scheduled=self._scheduled_when_requested)
        seen.count += 1
        scenario = self._scenario_locked(video_id)
        moment = Moment(
            video_id=video_id,
            elapsed=now - seen.first_seen,
            ordinal=seen.count,
            created_at=seen.created_at,
            params=scenario.params,
            token=self._token,
        )
        return RESPONDERS[scenario.name](moment)

    def _first_sight_locked(self, video_id: str, now: float, *, scheduled: bool) -> _Seen:
        seen = self._seen.get(video_id)
        if seen is None:
            wall = time.time()
            seen = self._seen[video_id] = _Seen(now, iso_utc(wall), wall, scheduled=scheduled)
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
    ) -> tuple[Answer, tuple[str, ...]]:
        failure = self._scheduler_failure
        if failure == "garbage":
            return Answer(200, b"<html>scheduler hiccup</html>", HTML_TYPE), ()
        if failure == "object":
            return json_answer(200, {"unexpected": True}), ()
        if isinstance(failure, int):
            body = {"error": f"scheduler failed ({failure})", "code": failure}
            return json_answer(failure, body), ()
        running = self._running_locked(now)
        key = "video_id" if available else self._scheduler_shape
        items = [self._scheduler_item(video_id, seen, key, now) for video_id, seen in running]
        ids = tuple(video_id for video_id, _ in running)
        if not available:
            return json_answer(200, items), ids
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
        return json_answer(200, {"executing": items, "available": capacity}), ids

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
            after = final_after(scenario)
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
            "started": iso_utc_millis(seen.started_wall),
            "elapsed": minutes_seconds(now - seen.first_seen),
        }

    def _list_answer_locked(self, query: dict[str, list[str]], now: float) -> Answer:
        if self._list_failure is not None:
            status = self._list_failure
            return json_answer(status, {"error": f"list failed ({status})", "code": status})
        email = query_value(query, "email")
        if not email:
            return bad_request("Parameter email is required")
        window = list_window(query)
        if isinstance(window, Answer):
            return window
        limit, offset = window
        entries = self._account_entries_locked(email, now)
        page = entries[offset : offset + limit]
        if self._list_shape == "brief":
            page = [brief(entry) for entry in page]
        body: dict[str, Any] = {"data": page}
        if self._list_paging == "paged":
            body.update(has_more=len(entries) > offset + limit, next_offset=offset + len(page))
        return json_answer(200, body)

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
            moment = Moment(
                video_id=video_id,
                elapsed=now - first_seen,
                ordinal=seen.count,
                created_at=seen.created_at,
                params=scenario.params,
                token=self._token,
            )
            entry = list_view(scenario, moment, queued)
            if in_queue(scenario, moment.elapsed):
                queued += 1
            if entry is not None:
                entries.append(entry)
        entries.reverse()
        return entries

    def _scenario_locked(self, video_id: str) -> Scenario:
        scripted = self._scripts.get(video_id)
        return scripted or scenario_from_id(video_id, self._default_delay)

    def track_connection(self, connection: socket.socket, open_: bool) -> None:
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

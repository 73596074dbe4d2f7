"""The simulator of useapi.net's PixVerse endpoints (one video, account lists, the scheduler) on
loopback, for the tests, the benchmarks and the demo: scripted per id, with switches for faults
and a log of every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from pixverse_tracker.testing.routes import LoggedRequest, SchedulerRead
from pixverse_tracker.testing.scenarios import final_after, parse_scenario
from pixverse_tracker.testing.server import SimServer
from pixverse_tracker.testing.upstream import (
    LIST_PAGINGS,
    LIST_SHAPES,
    SCHEDULER_FAULTS,
    SCHEDULER_SHAPES,
    FakeUpstream,
    non_negative,
    one_of,
)


class Simulator(FakeUpstream):
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
    ``tcp_nodelay`` sends each answer without Nagle's algorithm, as a real upstream does: the
    handler writes the headers and the body in two sends, and with Nagle on the body waits for
    the client's delayed ACK (~40 ms per answer). Benchmarks turn it on; tests keep the default.
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
        tcp_nodelay: bool = False,
    ) -> None:
        self._host = host
        self._port = port
        super().__init__(
            token,
            latency,
            default_delay,
            list_shape,
            list_paging,
            scheduler_shape,
            scheduled_when_requested,
        )
        self._tcp_nodelay = tcp_nodelay
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; a restart reuses the first bound port."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = SimServer((self._host, self._port), self, nodelay=self._tcp_nodelay)
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
        value = non_negative("latency", seconds)
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
        shape = one_of("list_shape", value, LIST_SHAPES)
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
        paging = one_of("list_paging", value, LIST_PAGINGS)
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
        shape = one_of("scheduler_shape", value, SCHEDULER_SHAPES)
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
            or fault in SCHEDULER_FAULTS
        ):
            raise ValueError(
                f"fault must be an HTTP error status, {' or '.join(SCHEDULER_FAULTS)}"
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
        until = time.monotonic() + non_negative("seconds", seconds)
        with self._lock:
            self._revoked_until = until

    def script(self, video_id: str, scenario: str) -> None:
        """Override the scenario of one id; raises ValueError on a malformed scenario.

        The id's clock and request count are kept: scripting does not restart it.
        """
        parsed = parse_scenario(scenario, self._default_delay)
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
            after = final_after(self._scenario_locked(video_id))
            return None if after is None else seen.first_seen + after


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

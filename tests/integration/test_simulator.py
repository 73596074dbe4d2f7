"""Integration tests of the loopback useapi.net simulator over real HTTP."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
import requests

from pixverse_tracker.testing import LoggedRequest, Simulator, make_id
from pixverse_tracker.testing.responders import DELETED_MESSAGE, NOT_YET_MESSAGE
from pixverse_tracker.testing.simulator import serve

TOKEN = "sim-token"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)


def get(sim: Simulator, path: str, token: str | None = TOKEN) -> Reply:
    """Send one raw GET (http.client, so the path reaches the server exactly as written)."""
    url = urlsplit(sim.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return Reply(response.status, response.headers, body, time.monotonic() - started)


def video_path(video_id: str) -> str:
    return "/v2/pixverse/videos/" + quote(video_id, safe=":@")


def poll(sim: Simulator, video_id: str, token: str | None = TOKEN) -> Reply:
    return get(sim, video_path(video_id), token)


def first_seen(sim: Simulator, video_id: str) -> float:
    # The first authorized request's arrival is the id's clock origin.
    return next(entry.started for entry in sim.requests_for(video_id) if entry.authorized)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()) + 0.02)


def assert_not_yet(reply: Reply) -> None:
    assert reply.status == 404
    assert reply.json() == {"error": NOT_YET_MESSAGE}


def assert_completed(reply: Reply, video_id: str) -> None:
    assert reply.status == 200
    record = reply.json()
    assert record["video_id"] == video_id
    assert record["video_status"] == 1
    assert record["video_status_name"] == "COMPLETED"
    assert record["video_status_final"] is True
    assert record["url"]


def assert_record(reply: Reply, status: int, name: str, final: bool, url: bool) -> None:
    assert reply.status == 200
    record = reply.json()
    assert (record["video_status"], record["video_status_name"]) == (status, name)
    assert record["video_status_final"] is final
    assert bool(record["url"]) is url


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(default_delay=0.0) as simulator:
        yield simulator


# -- ids and scenario selection ---------------------------------------------------------------


def test_make_id_builds_a_useapi_shaped_id_whose_email_tag_names_the_scenario() -> None:
    assert make_id("generating_2_6", 7) == "user:1-pixverse:sim+generating_2_6@example.com-video:7"
    assert make_id("never", 3, user=9, kind="image") == (
        "user:9-pixverse:sim+never@example.com-image:3"
    )


def test_an_id_without_a_tag_or_with_an_unknown_tag_completes_after_the_default_delay() -> None:
    with Simulator(default_delay=60.0) as simulator:
        for video_id in (
            "user:1-pixverse:plain@example.com-video:1",
            "user:1-pixverse:john+work@example.com-video:2",
            make_id("completed_x", 3),
        ):
            assert_not_yet(poll(simulator, video_id))
            assert simulator.completed_at(video_id) == first_seen(simulator, video_id) + 60.0


def test_scenario_parameters_may_be_decimals(sim: Simulator) -> None:
    video_id = make_id("completed_2.5", 1)
    assert_not_yet(poll(sim, video_id))
    assert sim.completed_at(video_id) == first_seen(sim, video_id) + 2.5


def test_script_overrides_the_scenario_named_in_the_id(sim: Simulator) -> None:
    video_id = make_id("never", 1)
    sim.script(video_id, "completed_0")
    assert_completed(poll(sim, video_id), video_id)


@pytest.mark.parametrize("scenario", ["nope", "completed_x", "ratelimit_1.5_0", "never_1"])
def test_script_refuses_a_malformed_scenario(sim: Simulator, scenario: str) -> None:
    with pytest.raises(ValueError):
        sim.script(make_id("never", 1), scenario)


# -- each scenario's sequence -----------------------------------------------------------------


def test_completed_answers_not_yet_until_its_delay_then_the_completed_record(
    sim: Simulator,
) -> None:
    video_id = make_id("completed_0.1", 1)
    assert_not_yet(poll(sim, video_id))
    completed_at = sim.completed_at(video_id)
    assert completed_at == first_seen(sim, video_id) + 0.1
    sleep_until(completed_at)
    assert_completed(poll(sim, video_id), video_id)


def test_a_completed_record_copies_the_documented_fields_for_the_requested_id(
    sim: Simulator,
) -> None:
    video_id = make_id("completed_0", 42)
    record = poll(sim, video_id).json()
    assert record["video_id"] == video_id
    assert record["url"] == "https://media.example/42.mp4"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["created_at"])
    assert record["model"] == "v3"
    assert record["duration"] == 5
    assert record["queue_data"] == {"queue_time": 1, "queue_count": 0}
    assert record["first_frame"] and record["prompt"]
    assert record["output_width"] > 0 and record["output_height"] > 0
    for documented in ("account_id", "template_i18n_json", "camera_movement", "platform"):
        assert documented in record
    assert record["lip_sync"] is None and record["customer_paths"] is None


def test_the_created_at_of_an_id_stays_its_first_seen_time(sim: Simulator) -> None:
    video_id = make_id("generating_0_0.1", 1)
    created = poll(sim, video_id).json()["created_at"]
    sleep_until(sim.completed_at(video_id) or 0.0)
    assert poll(sim, video_id).json()["created_at"] == created


@pytest.mark.parametrize(
    ("scenario", "status", "name", "final", "url"),
    [
        ("generating", 10, "GENERATING", False, False),
        ("queuedfinal", 5, "QUEUED", True, False),
        ("nourl", 1, "COMPLETED", True, False),
        ("unknown", 42, "MYSTERY", False, False),
    ],
)
def test_two_phase_scenarios_answer_not_yet_then_their_middle_record_then_completed(
    sim: Simulator, scenario: str, status: int, name: str, final: bool, url: bool
) -> None:
    video_id = make_id(f"{scenario}_0.15_0.35", 1)
    assert_not_yet(poll(sim, video_id))
    origin = first_seen(sim, video_id)
    sleep_until(origin + 0.15)
    assert_record(poll(sim, video_id), status, name, final, url)
    assert sim.completed_at(video_id) == origin + 0.35
    sleep_until(origin + 0.35)
    assert_completed(poll(sim, video_id), video_id)


@pytest.mark.parametrize(
    ("scenario", "status", "name"), [("failed", 8, "FAILED"), ("moderated", 7, "MODERATED")]
)
def test_failure_scenarios_answer_not_yet_then_a_final_record_without_url(
    sim: Simulator, scenario: str, status: int, name: str
) -> None:
    video_id = make_id(f"{scenario}_0.1", 1)
    assert_not_yet(poll(sim, video_id))
    completed_at = sim.completed_at(video_id)
    assert completed_at == first_seen(sim, video_id) + 0.1
    sleep_until(completed_at)
    assert_record(poll(sim, video_id), status, name, True, False)


def test_deleted_without_a_delay_answers_the_deletion_message_at_once(sim: Simulator) -> None:
    video_id = make_id("deleted", 1)
    reply = poll(sim, video_id)
    assert reply.status == 404
    assert reply.json() == {"error": DELETED_MESSAGE}


def test_deleted_with_a_delay_answers_not_yet_first(sim: Simulator) -> None:
    video_id = make_id("deleted_0.1", 1)
    assert_not_yet(poll(sim, video_id))
    sleep_until(sim.completed_at(video_id) or 0.0)
    assert poll(sim, video_id).json() == {"error": DELETED_MESSAGE}


def test_the_not_yet_message_mentions_deleted_but_differs_from_the_deletion_message() -> None:
    assert "deleted" in NOT_YET_MESSAGE
    assert "has been deleted" not in NOT_YET_MESSAGE


def test_rejected_always_answers_400_and_never_completes(sim: Simulator) -> None:
    video_id = make_id("rejected", 1)
    for _ in range(2):
        reply = poll(sim, video_id)
        assert reply.status == 400
        assert reply.json() == {"error": "Invalid video_id", "code": 400}
    assert sim.completed_at(video_id) is None


def test_never_answers_not_yet_forever(sim: Simulator) -> None:
    video_id = make_id("never", 1)
    for _ in range(3):
        assert_not_yet(poll(sim, video_id))
    assert sim.completed_at(video_id) is None


def test_ratelimit_answers_429_without_retry_after_for_the_first_n_requests(
    sim: Simulator,
) -> None:
    video_id = make_id("ratelimit_2_0", 1)
    for _ in range(2):
        reply = poll(sim, video_id)
        assert reply.status == 429
        assert reply.json() == {"error": "Too many requests", "code": 429}
        assert reply.headers.get("Retry-After") is None
    assert_completed(poll(sim, video_id), video_id)


def test_retryafter_answers_429_with_the_retry_after_header(sim: Simulator) -> None:
    video_id = make_id("retryafter_2_1.5_0", 1)
    for _ in range(2):
        reply = poll(sim, video_id)
        assert reply.status == 429
        assert reply.headers.get("Retry-After") == "1.5"
    assert_completed(poll(sim, video_id), video_id)


def test_errors_cycle_through_500_502_503_504_then_complete(sim: Simulator) -> None:
    video_id = make_id("errors_5_0", 1)
    replies = [poll(sim, video_id) for _ in range(5)]
    assert [reply.status for reply in replies] == [500, 502, 503, 504, 500]
    assert replies[0].json() == {"error": "Internal Server Error", "code": 500}
    for reply in replies[1:4]:
        assert reply.headers.get_content_type() == "text/html"
        assert reply.body.startswith(b"<html>")
    assert_completed(poll(sim, video_id), video_id)


def test_slow_delays_only_the_first_n_answers(sim: Simulator) -> None:
    video_id = make_id("slow_1_0.3_0", 1)
    assert poll(sim, video_id).elapsed >= 0.3
    fast = poll(sim, video_id)
    assert fast.elapsed < 0.3
    assert_completed(fast, video_id)


def test_garbage_cycles_through_malformed_answers_then_completes(sim: Simulator) -> None:
    video_id = make_id("garbage_6_0", 1)
    replies = [poll(sim, video_id) for _ in range(6)]
    assert all(reply.status == 200 for reply in replies)
    assert replies[0].body == b"<html>oops</html>"
    assert replies[0].headers.get_content_type() == "text/html"
    assert replies[1].json() == [1, 2]
    assert replies[2].body == b'{"video_id": "us'
    other = replies[3].json()
    assert other["video_status_name"] == "COMPLETED" and other["url"]
    assert other["video_id"] != video_id
    assert replies[4].json() == "ok"
    assert replies[5].body == b"<html>oops</html>"
    assert_completed(poll(sim, video_id), video_id)


# -- authorization ----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_missing_or_wrong_token_answers_401_and_does_not_start_the_clock(
    sim: Simulator, token: str | None
) -> None:
    video_id = make_id("completed_0", 1)
    reply = poll(sim, video_id, token=token)
    assert reply.status == 401
    assert reply.json() == {"error": "Unauthorized", "code": 401}
    assert sim.completed_at(video_id) is None
    [entry] = sim.requests
    assert entry.authorized is False and entry.video_id == video_id


def test_authorization_is_checked_before_the_path(sim: Simulator) -> None:
    assert get(sim, "/nowhere", token="wrong").status == 401


def test_the_token_can_be_changed_at_run_time(sim: Simulator) -> None:
    video_id = make_id("completed_0", 1)
    sim.token = "rotated"
    assert poll(sim, video_id).status == 401
    assert poll(sim, video_id, token="rotated").status == 200


def test_unauthorized_for_answers_401_to_every_request_until_it_expires(sim: Simulator) -> None:
    sim.unauthorized_for(0.2)
    started = time.monotonic()
    assert poll(sim, make_id("completed_0", 1)).status == 401
    assert get(sim, "/nowhere").status == 401
    sleep_until(started + 0.2)
    assert poll(sim, make_id("completed_0", 1)).status == 200


# -- path handling ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v2/pixverse/videos/user:1/extra",
        "/v2/pixverse/videos/x/",
        "/v2/pixverse/videos%2Fx",
        "/v2%2Fpixverse%2Fvideos%2Fx",
        "/v2/pixverse/video/x",
        "/",
    ],
)
def test_a_path_that_is_not_exactly_the_endpoint_answers_404_not_found(
    sim: Simulator, path: str
) -> None:
    reply = get(sim, path)
    assert reply.status == 404
    assert reply.json() == {"error": "Not found"}
    [entry] = sim.requests
    assert entry.video_id is None and entry.path == path and entry.kind == "other"


def test_the_id_segment_is_percent_decoded_after_splitting(sim: Simulator) -> None:
    reply = get(sim, "/v2/pixverse/videos/a%2Fb")
    assert reply.status == 200
    assert reply.json()["video_id"] == "a/b"


def test_an_encoded_id_is_decoded_and_the_query_string_is_ignored(sim: Simulator) -> None:
    video_id = make_id("completed_0", 5)
    path = "/v2/pixverse/videos/" + quote(video_id, safe="") + "?ignored=1"
    assert_completed(get(sim, path), video_id)
    assert sim.requests_for(video_id)[0].path == path


# -- request log, overlaps, latency, lifecycle ------------------------------------------------


def test_the_request_log_records_every_request_in_arrival_order(sim: Simulator) -> None:
    first, second = make_id("never", 1), make_id("completed_0", 2)
    poll(sim, first)
    poll(sim, second)
    poll(sim, first, token="wrong")
    log = sim.requests
    assert [(e.video_id, e.status, e.authorized) for e in log] == [
        (first, 404, True),
        (second, 200, True),
        (first, 401, False),
    ]
    assert all(isinstance(e, LoggedRequest) and e.started <= e.finished for e in log)
    assert [e.started for e in log] == sorted(e.started for e in log)
    assert [e.status for e in sim.requests_for(first)] == [404, 401]
    log.clear()
    assert len(sim.requests) == 3


def run_concurrently(sim: Simulator, paths: list[str]) -> list[Reply]:
    replies: dict[int, Reply] = {}

    def worker(index: int, path: str) -> None:
        replies[index] = get(sim, path)

    threads = [threading.Thread(target=worker, args=item) for item in enumerate(paths)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [replies[index] for index in range(len(paths))]


def test_two_concurrent_requests_for_one_id_count_as_one_overlap(sim: Simulator) -> None:
    video_id = make_id("slow_2_0.2_0", 1)
    run_concurrently(sim, [video_path(video_id)] * 2)
    assert sim.overlapping_requests() == 1


def test_sequential_requests_and_concurrent_requests_for_different_ids_do_not_overlap(
    sim: Simulator,
) -> None:
    poll(sim, make_id("completed_0", 1))
    poll(sim, make_id("completed_0", 1))
    run_concurrently(sim, [video_path(make_id("slow_1_0.1_0", n)) for n in (2, 3)])
    assert sim.overlapping_requests() == 0


def test_the_server_keeps_answering_while_one_answer_is_sleeping(sim: Simulator) -> None:
    slow = threading.Thread(target=poll, args=(sim, make_id("slow_1_0.4_0", 1)))
    slow.start()
    time.sleep(0.05)
    assert poll(sim, make_id("completed_0", 2)).elapsed < 0.5
    slow.join()


def test_latency_delays_every_answer_and_can_be_changed_at_run_time(sim: Simulator) -> None:
    assert poll(sim, make_id("completed_0", 1)).elapsed < 0.1
    sim.latency = 0.1
    assert poll(sim, make_id("completed_0", 1)).elapsed >= 0.1
    assert poll(sim, make_id("completed_0", 1), token="wrong").elapsed >= 0.1
    assert get(sim, "/nowhere").elapsed >= 0.1


def test_latency_given_at_construction_applies_from_the_start() -> None:
    with Simulator(latency=0.1, default_delay=0.0) as simulator:
        assert poll(simulator, make_id("completed_0", 1)).elapsed >= 0.1


def test_reset_forgets_the_log_the_overlaps_and_the_per_id_clocks(sim: Simulator) -> None:
    video_id = make_id("ratelimit_1_0", 1)
    assert poll(sim, video_id).status == 429
    assert poll(sim, video_id).status == 200
    sim.reset()
    assert sim.requests == [] and sim.overlapping_requests() == 0
    assert sim.completed_at(video_id) is None
    assert poll(sim, video_id).status == 429


def test_per_request_logging_to_stderr_is_silenced(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    poll(sim, make_id("completed_0", 1))
    get(sim, "/nowhere")
    assert capfd.readouterr().err == ""


def test_kept_alive_connections_are_reused_and_dropped_on_stop() -> None:
    simulator = Simulator(default_delay=0.0).start()
    url = simulator.base_url + video_path(make_id("completed_0", 1))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with requests.Session() as session:
        assert session.get(url, headers=headers, timeout=5).status_code == 200
        assert session.get(url, headers=headers, timeout=5).status_code == 200
        simulator.stop()
        with pytest.raises(requests.ConnectionError):
            session.get(url, headers=headers, timeout=5)


def test_stop_drops_a_sleeping_answer_instead_of_sending_it_early() -> None:
    simulator = Simulator(default_delay=0.0).start()
    outcome: list[object] = []

    def slow_poll() -> None:
        try:
            outcome.append(poll(simulator, make_id("slow_1_30_0", 1)))
        except (http.client.HTTPException, OSError) as error:
            outcome.append(error)

    thread = threading.Thread(target=slow_poll)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    simulator.stop()
    thread.join(timeout=5)
    assert time.monotonic() - started < 1.0
    assert len(outcome) == 1 and not isinstance(outcome[0], Reply)
    assert simulator.requests == []


def test_a_restarted_simulator_listens_on_the_same_base_url() -> None:
    simulator = Simulator(default_delay=0.0).start()
    base_url = simulator.base_url
    simulator.stop()
    with simulator:
        assert simulator.base_url == base_url
        assert poll(simulator, make_id("completed_0", 1)).status == 200


def test_base_url_needs_a_started_simulator_when_the_port_is_chosen_by_the_system() -> None:
    with pytest.raises(RuntimeError):
        _ = Simulator().base_url


def test_serve_prints_its_base_url_and_stops_cleanly_on_ctrl_c() -> None:
    code = (
        f"from pixverse_tracker.testing.simulator import {serve.__name__}; "
        "serve('127.0.0.1', 0, 'cli', 0.0, 0.0, list_shape='brief', list_paging='paged')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        reply = requests.get(
            base_url + video_path(make_id("completed_0", 1)),
            headers={"Authorization": "Bearer cli"},
            timeout=5,
        )
        assert reply.status_code == 200
        listed = requests.get(
            base_url + "/v2/pixverse/videos/?email=sim%2Bcompleted_0@example.com",
            headers={"Authorization": "Bearer cli"},
            timeout=5,
        ).json()
        assert listed["has_more"] is False and listed["next_offset"] == 1
        assert "account_id" not in listed["data"][0]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
        assert stderr == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_request_whose_client_gave_up_ends_there_and_is_logged_as_499(sim: Simulator) -> None:
    video_id = make_id("slow_1_2_0", 901)
    url = sim.base_url + video_path(video_id)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, headers=headers, timeout=0.3)
    time.sleep(0.3)  # the simulator notices the hang-up within its 50 ms check interval
    second = requests.get(url, headers=headers, timeout=5)
    assert second.status_code == 200
    assert [r.status for r in sim.requests_for(video_id)] == [499, 200]
    # the abandoned request ended when its client left, so the retry is no overlap
    assert sim.overlapping_requests() == 0


# -- create() ---------------------------------------------------------------------------------


def test_create_starts_the_clock_without_logging_a_request(sim: Simulator) -> None:
    video_id = make_id("completed_0.1", 1)
    before = time.monotonic()
    sim.create(video_id)
    completed_at = sim.completed_at(video_id)
    assert completed_at is not None and before + 0.1 <= completed_at <= time.monotonic() + 0.1
    assert sim.requests == []
    sleep_until(completed_at)
    # the very first request already finds it done: its clock ran from create()
    assert_completed(poll(sim, video_id), video_id)


def test_create_does_not_count_toward_the_request_ordinal(sim: Simulator) -> None:
    video_id = make_id("ratelimit_1_0", 1)
    sim.create(video_id)
    assert poll(sim, video_id).status == 429
    assert poll(sim, video_id).status == 200


def test_creating_an_id_again_changes_nothing(sim: Simulator) -> None:
    video_id = make_id("ratelimit_1_5", 1)
    sim.create(video_id)
    completed_at = sim.completed_at(video_id)
    time.sleep(0.02)
    sim.create(video_id)
    assert poll(sim, video_id).status == 429
    sim.create_many([video_id])
    assert sim.completed_at(video_id) == completed_at
    assert_not_yet(poll(sim, video_id))  # the request count was not restarted either
    assert [entry.status for entry in sim.requests] == [429, 404]


def test_create_many_creates_the_ids_in_the_given_order(sim: Simulator) -> None:
    sim.create_many(make_id("never", n) for n in (3, 1, 2))
    assert [entry["video_id"] for entry in listed(sim, "sim+never@example.com")] == [
        make_id("never", n) for n in (2, 1, 3)
    ]


def test_create_many_refuses_a_single_id_given_as_a_string(sim: Simulator) -> None:
    with pytest.raises(TypeError):
        sim.create_many(make_id("never", 1))


def test_reset_forgets_created_videos(sim: Simulator) -> None:
    video_id = make_id("never", 1)
    sim.create(video_id)
    sim.reset()
    assert sim.completed_at(video_id) is None
    assert listed(sim, "sim+never@example.com") == []


# -- the queued scenario on the single-video endpoint -----------------------------------------


def test_queued_answers_like_completed_one_video_at_a_time(sim: Simulator) -> None:
    video_id = make_id("queued_0.1_0.2", 1)
    assert_not_yet(poll(sim, video_id))
    origin = first_seen(sim, video_id)
    assert sim.completed_at(video_id) == origin + 0.2
    sleep_until(origin + 0.1)
    assert_not_yet(poll(sim, video_id))  # its queue phase shows only in the list
    sleep_until(origin + 0.2)
    assert_completed(poll(sim, video_id), video_id)


@pytest.mark.parametrize("scenario", ["queued_0.5_0.2", "queued_0.1"])
def test_queued_refuses_a_queue_longer_than_the_whole_generation(
    sim: Simulator, scenario: str
) -> None:
    # the fixture's default delay is 0, so a bare queued_0.1 also queues past D
    with pytest.raises(ValueError, match="Q must not exceed D"):
        sim.script(make_id("never", 1), scenario)


# -- the list endpoint ------------------------------------------------------------------------


def list_path(
    email: str | None,
    params: Mapping[str, object] | None = None,
    base: str = "/v2/pixverse/videos/",
) -> str:
    query = {} if email is None else {"email": email}
    # urlencode percent-encodes "+" as %2B, as the tracker's client must
    return base + "?" + urlencode({**query, **(params or {})})


def list_videos(
    sim: Simulator, email: str | None, token: str | None = TOKEN, **params: object
) -> Reply:
    return get(sim, list_path(email, params), token)


def listed(sim: Simulator, email: str, **params: object) -> list[dict[str, Any]]:
    reply = get(sim, list_path(email, params))
    assert reply.status == 200
    assert reply.headers.get_content_type() == "application/json"
    data: list[dict[str, Any]] = reply.json()["data"]
    return data


def account_id(email: str, n: int, kind: str = "video") -> str:
    return f"user:1-pixverse:{email}-{kind}:{n}"


def ids_of(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["video_id"] for entry in entries]


def status_of(entry: dict[str, Any]) -> tuple[int, str, bool]:
    return entry["video_status"], entry["video_status_name"], entry["video_status_final"]


QUEUED = (5, "QUEUED", True)
GENERATING = (10, "GENERATING", False)
COMPLETED = (1, "COMPLETED", True)


def test_a_queued_video_is_listed_queued_then_generating_then_as_its_completed_record(
    sim: Simulator,
) -> None:
    email = "sim+queued_0.5_1.0@example.com"
    first, second = make_id("queued_0.5_1.0", 1), make_id("queued_0.5_1.0", 2)
    sim.create_many([first, second])
    origin = (sim.completed_at(second) or 0.0) - 1.0

    entries = listed(sim, email)
    assert ids_of(entries) == [second, first]
    assert [status_of(entry) for entry in entries] == [QUEUED, QUEUED]
    # the second waits behind the first
    assert [entry["queue_data"] for entry in entries] == [
        {"queue_time": 1, "queue_count": 1},
        {"queue_time": 1, "queue_count": 0},
    ]
    assert all(entry["url"] == "" for entry in entries)

    sleep_until(origin + 0.5)
    entries = listed(sim, email)
    assert [status_of(entry) for entry in entries] == [GENERATING, GENERATING]
    assert all(entry["queue_data"] == {"queue_time": 0, "queue_count": 0} for entry in entries)
    assert all(entry["url"] == "" for entry in entries)

    sleep_until(origin + 1.0)
    entries = listed(sim, email)
    assert entries == [poll(sim, second).json(), poll(sim, first).json()]
    assert [status_of(entry) for entry in entries] == [COMPLETED, COMPLETED]


def test_the_queue_time_of_a_listed_video_counts_down(sim: Simulator) -> None:
    email = "sim+queued_1.5_1.5@example.com"
    first, second = make_id("queued_1.5_1.5", 1), make_id("queued_1.5_1.5", 2)
    sim.create(first)
    origin = (sim.completed_at(first) or 0.0) - 1.5
    assert listed(sim, email)[0]["queue_data"] == {"queue_time": 2, "queue_count": 0}
    sleep_until(origin + 0.6)
    sim.create(second)
    assert [entry["queue_data"] for entry in listed(sim, email)] == [
        {"queue_time": 2, "queue_count": 1},
        {"queue_time": 1, "queue_count": 0},
    ]


def test_a_video_that_left_the_queue_no_longer_counts_as_ahead_of_its_siblings(
    sim: Simulator,
) -> None:
    email = "team@example.com"
    first, second = account_id(email, 1), account_id(email, 2)
    sim.script(first, "queued_0.1_5")
    sim.script(second, "queued_5_5")
    sim.create_many([first, second])
    sleep_until((sim.completed_at(first) or 0.0) - 5 + 0.1)
    entries = listed(sim, email)
    assert [status_of(entry) for entry in entries] == [QUEUED, GENERATING]
    assert entries[0]["queue_data"]["queue_count"] == 0


@pytest.mark.parametrize(
    ("scenario", "middle"),
    [
        ("generating", GENERATING),
        ("queuedfinal", QUEUED),
        ("nourl", COMPLETED),
        ("unknown", (42, "MYSTERY", False)),
    ],
)
def test_a_two_phase_video_is_listed_generating_then_its_middle_record_then_completed(
    sim: Simulator, scenario: str, middle: tuple[int, str, bool]
) -> None:
    video_id = make_id(f"{scenario}_0.15_0.35", 1)
    email = f"sim+{scenario}_0.15_0.35@example.com"
    sim.create(video_id)
    origin = (sim.completed_at(video_id) or 0.0) - 0.35
    assert [status_of(entry) for entry in listed(sim, email)] == [GENERATING]
    sleep_until(origin + 0.15)
    [entry] = listed(sim, email)
    assert status_of(entry) == middle
    assert entry == poll(sim, video_id).json()
    sleep_until(origin + 0.35)
    [entry] = listed(sim, email)
    assert entry == poll(sim, video_id).json()
    assert status_of(entry) == COMPLETED and entry["url"]


@pytest.mark.parametrize(
    ("scenario", "final"), [("failed", (8, "FAILED", True)), ("moderated", (7, "MODERATED", True))]
)
def test_a_failing_video_is_listed_generating_then_as_its_final_record(
    sim: Simulator, scenario: str, final: tuple[int, str, bool]
) -> None:
    video_id = make_id(f"{scenario}_0.2", 1)
    email = f"sim+{scenario}_0.2@example.com"
    sim.create(video_id)
    assert [status_of(entry) for entry in listed(sim, email)] == [GENERATING]
    sleep_until(sim.completed_at(video_id) or 0.0)
    [entry] = listed(sim, email)
    assert status_of(entry) == final and entry["url"] == ""
    assert entry == poll(sim, video_id).json()


def test_a_never_ending_video_stays_generating_in_the_list(sim: Simulator) -> None:
    sim.create(make_id("never", 1))
    for _ in range(2):
        [entry] = listed(sim, "sim+never@example.com")
        assert status_of(entry) == GENERATING and entry["url"] == ""
        time.sleep(0.05)


def test_a_deleted_video_leaves_the_list_and_a_rejected_one_is_never_listed(
    sim: Simulator,
) -> None:
    deleted = make_id("deleted_0.2", 1)
    sim.create(deleted)
    assert [status_of(entry) for entry in listed(sim, "sim+deleted_0.2@example.com")] == [
        GENERATING
    ]
    sleep_until(sim.completed_at(deleted) or 0.0)
    assert listed(sim, "sim+deleted_0.2@example.com") == []

    rejected = make_id("rejected", 2)
    sim.create(rejected)
    assert poll(sim, rejected).status == 400
    assert listed(sim, "sim+rejected@example.com") == []


def test_the_list_is_newest_first_and_pages_by_offset_and_limit(sim: Simulator) -> None:
    email = "sim+never@example.com"
    sim.create_many(make_id("never", n) for n in range(1, 6))
    newest_first = [make_id("never", n) for n in range(5, 0, -1)]
    assert ids_of(listed(sim, email)) == newest_first
    assert ids_of(listed(sim, email, limit=2)) == newest_first[:2]
    assert ids_of(listed(sim, email, limit=2, offset=2)) == newest_first[2:4]
    assert ids_of(listed(sim, email, limit=2, offset=4)) == newest_first[4:]
    assert listed(sim, email, offset=5) == []


def test_the_list_shows_40_videos_unless_told_otherwise(sim: Simulator) -> None:
    sim.create_many(make_id("never", n) for n in range(1, 46))
    assert len(listed(sim, "sim+never@example.com")) == 40
    assert len(listed(sim, "sim+never@example.com", limit=100)) == 45


def test_a_plain_list_page_carries_only_data(sim: Simulator) -> None:
    sim.create_many(make_id("never", n) for n in range(1, 4))
    reply = list_videos(sim, "sim+never@example.com", limit=2)
    assert set(reply.json()) == {"data"}


def test_a_paged_list_says_whether_more_follows_and_where_to_continue(sim: Simulator) -> None:
    sim.list_paging = "paged"
    email = "sim+never@example.com"
    sim.create_many(make_id("never", n) for n in range(1, 5))

    def page(offset: int) -> tuple[int, bool, int]:
        body = list_videos(sim, email, limit=2, offset=offset).json()
        return len(body["data"]), body["has_more"], body["next_offset"]

    assert page(0) == (2, True, 2)
    assert page(1) == (2, True, 3)
    assert page(2) == (2, False, 4)
    assert page(3) == (1, False, 4)
    assert page(4) == (0, False, 4)


def test_the_list_readings_can_be_chosen_at_construction() -> None:
    with Simulator(default_delay=0.0, list_shape="brief", list_paging="paged") as simulator:
        assert (simulator.list_shape, simulator.list_paging) == ("brief", "paged")
        simulator.create(make_id("never", 1))
        body = list_videos(simulator, "sim+never@example.com").json()
        assert body["has_more"] is False and body["next_offset"] == 1
        assert "account_id" not in body["data"][0]


@pytest.mark.parametrize(
    "settings", [{"list_shape": "short"}, {"list_paging": "cursor"}, {"list_shape": "FULL"}]
)
def test_an_unknown_list_reading_is_refused(settings: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Simulator(**settings)  # type: ignore[arg-type]
    simulator = Simulator()
    [(name, value)] = settings.items()
    with pytest.raises(ValueError):
        setattr(simulator, name, value)
    assert (simulator.list_shape, simulator.list_paging) == ("full", "plain")


def test_a_full_list_entry_has_every_field_and_a_brief_one_only_the_status_fields(
    sim: Simulator,
) -> None:
    video_id = make_id("completed_0", 1)
    record = poll(sim, video_id).json()
    [full] = listed(sim, "sim+completed_0@example.com")
    assert full == record
    sim.list_shape = "brief"
    [brief] = listed(sim, "sim+completed_0@example.com")
    assert set(brief) == {
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
    assert brief == {key: record[key] for key in brief}


def test_accounts_are_told_apart_by_email_compared_without_regard_to_case(
    sim: Simulator,
) -> None:
    ann = [account_id("Ann+work@Example.com", 1), account_id("Ann+work@Example.com", 2, "image")]
    bob = account_id("bob@example.com", 3)
    sim.create_many([*ann, bob, "an id without an account"])
    assert ids_of(listed(sim, "ann+WORK@example.com")) == ann[::-1]
    assert ids_of(listed(sim, "BOB@example.com")) == [bob]
    assert listed(sim, "ann@example.com") == []
    # an unencoded "+" is a space in a query string, so it names another account
    reply = get(sim, "/v2/pixverse/videos/?email=ann+work@example.com")
    assert reply.status == 200 and reply.json() == {"data": []}
    assert [entry.email for entry in sim.list_requests("ANN+work@example.com")] == [
        "ann+WORK@example.com"
    ]


def test_the_list_answers_with_or_without_the_trailing_slash(sim: Simulator) -> None:
    sim.create(make_id("never", 1))
    for base in ("/v2/pixverse/videos/", "/v2/pixverse/videos"):
        reply = get(sim, list_path("sim+never@example.com", base=base))
        assert reply.status == 200
        assert ids_of(reply.json()["data"]) == [make_id("never", 1)]


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_the_list_answers_401_to_a_missing_or_wrong_token(
    sim: Simulator, token: str | None
) -> None:
    sim.create(make_id("never", 1))
    reply = list_videos(sim, "sim+never@example.com", token=token)
    assert reply.status == 401
    assert reply.json() == {"error": "Unauthorized", "code": 401}
    [entry] = sim.list_requests()
    assert entry.authorized is False and entry.status == 401


def test_the_list_answers_401_while_the_token_is_revoked(sim: Simulator) -> None:
    sim.unauthorized_for(0.2)
    started = time.monotonic()
    assert list_videos(sim, "sim+never@example.com").status == 401
    sleep_until(started + 0.2)
    assert list_videos(sim, "sim+never@example.com").status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v2/pixverse/videos/",
        "/v2/pixverse/videos",
        "/v2/pixverse/videos/?limit=5",
        "/v2/pixverse/videos/?email=",
        "/v2/pixverse/videos?email=&limit=5",
    ],
)
def test_the_list_needs_an_email(sim: Simulator, path: str) -> None:
    reply = get(sim, path)
    assert reply.status == 400
    assert reply.json() == {"error": "Parameter email is required", "code": 400}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "x"}, "offset"),
    ],
)
def test_a_bad_limit_or_offset_answers_400_naming_it(
    sim: Simulator, params: dict[str, object], named: str
) -> None:
    reply = get(sim, list_path("sim+never@example.com", params))
    assert reply.status == 400
    body = reply.json()
    assert body["code"] == 400 and named in body["error"]


def test_listing_does_not_advance_a_fault_scenarios_request_count(sim: Simulator) -> None:
    video_id = make_id("errors_2_0", 1)
    sim.create(video_id)
    for _ in range(3):
        # the faults belong to the single-video endpoint: the list shows the plain record
        [entry] = listed(sim, "sim+errors_2_0@example.com")
        assert status_of(entry) == COMPLETED
    assert [poll(sim, video_id).status for _ in range(3)] == [500, 502, 200]
    assert [entry.status for entry in sim.requests_for(video_id)] == [500, 502, 200]


def test_list_requests_are_logged_with_their_kind_and_email(sim: Simulator) -> None:
    poll(sim, make_id("never", 1))
    list_videos(sim, "sim+never@example.com")
    list_videos(sim, "other@example.com", limit=0)
    get(sim, "/nowhere")
    assert [(e.kind, e.video_id, e.email, e.status) for e in sim.requests] == [
        ("video", make_id("never", 1), None, 404),
        ("list", None, "sim+never@example.com", 200),
        ("list", None, "other@example.com", 400),
        ("other", None, None, 404),
    ]
    assert [e.email for e in sim.list_requests()] == ["sim+never@example.com", "other@example.com"]
    assert [e.status for e in sim.list_requests("OTHER@example.com")] == [400]


def test_concurrent_list_requests_never_count_as_overlaps(sim: Simulator) -> None:
    sim.latency = 0.1
    run_concurrently(sim, [list_path("sim+never@example.com")] * 2)
    assert sim.overlapping_requests() == 0
    assert len(sim.list_requests()) == 2


def test_latency_delays_the_list_too(sim: Simulator) -> None:
    sim.latency = 0.1
    assert list_videos(sim, "sim+never@example.com").elapsed >= 0.1


def test_fail_lists_answers_every_list_request_with_that_status_until_lifted(
    sim: Simulator,
) -> None:
    video_id = make_id("completed_0", 1)
    sim.create(video_id)
    sim.fail_lists(503)
    failed = get(sim, list_path("sim+completed_0@example.com"))
    assert failed.status == 503 and "error" in failed.json()
    # the single-video endpoint is not affected
    assert get(sim, video_path(video_id)).status == 200
    sim.fail_lists(None)
    assert get(sim, list_path("sim+completed_0@example.com")).status == 200
    with pytest.raises(ValueError):
        sim.fail_lists(200)


def test_a_video_created_unlisted_is_seen_by_id_but_never_on_its_list(sim: Simulator) -> None:
    hidden = account_id("team@example.com", 1)
    shown = account_id("team@example.com", 2)
    sim.create(hidden, listed=False)
    sim.create(shown)
    assert ids_of(listed(sim, "team@example.com")) == [shown]
    get(sim, video_path(hidden))  # a request by id does not put it on the list either
    assert ids_of(listed(sim, "team@example.com")) == [shown]
    assert sim.completed_at(hidden) is not None  # its clock started at creation

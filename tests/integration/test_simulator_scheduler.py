"""The simulator's scheduler over real HTTP, read with the real client."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from pixverse_tracker.rules.outcomes import (
    Executing,
    RateLimited,
    Rejected,
    SchedulerOutcome,
    Transient,
    Unauthorized,
)
from pixverse_tracker.testing import SchedulerRead, Simulator, make_id
from pixverse_tracker.upstream.transport import UseapiClient
from tests.integration.test_simulator import TOKEN, get, poll

SCHEDULER = "/v2/pixverse/scheduler/"
AVAILABLE = "/v2/pixverse/scheduler/available"
_MM_SS = re.compile(r"\d{2,}:[0-5]\d")


class _AnyString:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)


ANY_TIME = _AnyString()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(default_delay=0.0) as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> Iterator[UseapiClient]:
    with UseapiClient(sim.base_url, TOKEN) as useapi:
        yield useapi


def executing_ids(client: UseapiClient) -> tuple[str, ...]:
    outcome = client.scheduler()
    assert isinstance(outcome, Executing), outcome
    assert outcome.dropped == 0
    return outcome.ids


# -- what is listed, and for how long ---------------------------------------------------------


def test_a_created_video_is_listed_while_generating_and_gone_once_its_record_is_final(
    sim: Simulator, client: UseapiClient
) -> None:
    video_id = make_id("generating_0.2_0.6", 1)
    sim.create(video_id)
    assert executing_ids(client) == (video_id,)
    time.sleep(0.3)  # past A: its record says GENERATING, the job still runs
    assert executing_ids(client) == (video_id,)
    completed_at = sim.completed_at(video_id)
    assert completed_at is not None
    time.sleep(max(0.0, completed_at - time.monotonic()) + 0.05)
    assert poll(sim, video_id).json()["video_status_final"] is True
    assert executing_ids(client) == ()


def test_an_id_first_seen_by_a_request_is_listed_from_that_request(
    sim: Simulator, client: UseapiClient
) -> None:
    video_id = make_id("completed_5", 2)
    assert executing_ids(client) == ()
    poll(sim, video_id)
    assert executing_ids(client) == (video_id,)


def test_ids_first_seen_by_a_request_can_be_made_website_videos_simulator_wide(
    sim: Simulator, client: UseapiClient
) -> None:
    assert sim.scheduled_when_requested is True
    sim.scheduled_when_requested = False
    requested, created = make_id("never", 3), make_id("never", 4)
    poll(sim, requested)
    sim.create(created)
    assert executing_ids(client) == (created,)
    assert Simulator(scheduled_when_requested=False).scheduled_when_requested is False


def test_a_video_made_on_the_website_is_never_listed(sim: Simulator, client: UseapiClient) -> None:
    website = [make_id("never", 5), make_id("generating_0_5", 6)]
    sim.create(website[0], scheduled=False)
    sim.create_many(website[1:], scheduled=False)
    api = make_id("never", 7)
    sim.create(api)
    for video_id in website:
        poll(sim, video_id)
    assert executing_ids(client) == (api,)
    assert get(sim, AVAILABLE).json()["executing"] == [
        {"video_id": api, "type": "video", "started": ANY_TIME, "elapsed": ANY_TIME}
    ]


def test_several_jobs_of_several_accounts_are_listed_oldest_first_in_one_answer(
    sim: Simulator, client: UseapiClient
) -> None:
    ids = [make_id("never", 8), make_id("never", 9, user=2), make_id("generating_0_9", 10)]
    sim.create_many(ids)
    assert executing_ids(client) == tuple(ids)


def test_a_rejected_id_is_never_listed_and_a_never_ending_one_always_is(
    sim: Simulator, client: UseapiClient
) -> None:
    rejected, never = make_id("rejected", 11), make_id("never", 12)
    sim.create_many([rejected, never])
    assert poll(sim, rejected).status == 400
    assert executing_ids(client) == (never,)
    time.sleep(0.2)
    assert executing_ids(client) == (never,)


@pytest.mark.parametrize("scenario", ["failed_0.2", "moderated_0.2", "deleted_0.2", "errors_2_0.2"])
def test_a_job_ending_in_a_failure_or_a_deletion_leaves_at_its_final_moment(
    sim: Simulator, client: UseapiClient, scenario: str
) -> None:
    video_id = make_id(scenario, 13)
    sim.create(video_id)
    assert executing_ids(client) == (video_id,)
    time.sleep(0.3)
    assert executing_ids(client) == ()


def test_a_script_that_prolongs_a_finished_job_puts_it_back_and_rejected_takes_it_off(
    sim: Simulator, client: UseapiClient
) -> None:
    video_id = make_id("completed_0", 14)
    sim.create(video_id)
    assert executing_ids(client) == ()
    sim.script(video_id, "never")
    assert executing_ids(client) == (video_id,)
    sim.script(video_id, "rejected")
    assert executing_ids(client) == ()


def test_reading_the_scheduler_starts_no_clock_and_counts_toward_no_request_ordinal(
    sim: Simulator, client: UseapiClient
) -> None:
    video_id = make_id("ratelimit_1_0", 15)
    for _ in range(3):
        client.scheduler()
    assert sim.completed_at(video_id) is None
    assert poll(sim, video_id).status == 429  # still its first request
    assert sim.overlapping_requests() == 0


# -- the items --------------------------------------------------------------------------------


def test_items_carry_id_type_started_and_elapsed(sim: Simulator) -> None:
    video, image = make_id("never", 16), make_id("never", 17, kind="image")
    before = datetime.now(UTC)
    sim.create(video)
    time.sleep(1.1)
    poll(sim, image)
    items = get(sim, SCHEDULER).json()
    assert [(item["id"], item["type"]) for item in items] == [(video, "video"), (image, "image")]
    assert set(items[0]) == {"id", "type", "started", "elapsed"}
    started = datetime.fromisoformat(items[0]["started"].replace("Z", "+00:00"))
    assert before.replace(microsecond=0) <= started <= datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", items[0]["started"])
    assert _MM_SS.fullmatch(items[0]["elapsed"])
    assert items[0]["elapsed"] == "00:01"
    assert items[1]["elapsed"] == "00:00"


def test_the_scheduler_answers_with_or_without_the_trailing_slash(sim: Simulator) -> None:
    video_id = make_id("never", 18)
    sim.create(video_id)
    for path in (SCHEDULER, SCHEDULER.rstrip("/")):
        reply = get(sim, path)
        assert reply.status == 200
        assert [item["id"] for item in reply.json()] == [video_id]


def test_other_paths_under_the_scheduler_are_not_found(sim: Simulator) -> None:
    assert get(sim, SCHEDULER + "elsewhere").status == 404
    assert get(sim, AVAILABLE + "/more").status == 404


@pytest.mark.parametrize("shape", ["id", "videoId", "video_id"])
def test_the_scheduler_shape_names_the_id_key_and_the_client_reads_every_one(
    shape: str,
) -> None:
    with Simulator(scheduler_shape=shape) as sim, UseapiClient(sim.base_url, TOKEN) as client:
        video_id = make_id("never", 19)
        sim.create(video_id)
        assert sim.scheduler_shape == shape
        assert [item[shape] for item in get(sim, SCHEDULER).json()] == [video_id]
        assert executing_ids(client) == (video_id,)


def test_the_scheduler_shape_can_be_changed_at_run_time_and_an_unknown_one_is_refused(
    sim: Simulator,
) -> None:
    sim.create(make_id("never", 20))
    sim.scheduler_shape = "videoId"
    assert "videoId" in get(sim, SCHEDULER).json()[0]
    with pytest.raises(ValueError, match="scheduler_shape"):
        sim.scheduler_shape = "ID"
    with pytest.raises(ValueError, match="scheduler_shape"):
        Simulator(scheduler_shape="video")


def test_available_lists_the_same_jobs_under_video_id_and_each_accounts_capacity(
    sim: Simulator, client: UseapiClient
) -> None:
    a1, a2 = make_id("never", 21), make_id("never", 22)
    done, other = make_id("completed_0", 23), make_id("never", 24, user=2)
    sim.create_many([a1, a2, done])
    poll(sim, make_id("generating_0_9", 25))  # another account, started by a request
    sim.create(other, scheduled=False)
    body = get(sim, AVAILABLE).json()
    assert [item["video_id"] for item in body["executing"]] == [
        a1,
        a2,
        make_id("generating_0_9", 25),
    ]
    capacity = {entry["email"]: entry for entry in body["available"]}
    assert capacity == {
        "sim+never@example.com": {
            "email": "sim+never@example.com",
            "maxJobs": 10,
            "executing": 2,
            "available": 8,
        },
        "sim+completed_0@example.com": {
            "email": "sim+completed_0@example.com",
            "maxJobs": 10,
            "executing": 0,
            "available": 10,
        },
        "sim+generating_0_9@example.com": {
            "email": "sim+generating_0_9@example.com",
            "maxJobs": 10,
            "executing": 1,
            "available": 9,
        },
    }
    assert executing_ids(client) == (a1, a2, make_id("generating_0_9", 25))


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        (401, Unauthorized, 401),
        (429, RateLimited, 429),
        (500, Transient, 500),
        (503, Transient, 503),
        (404, Rejected, 404),
        (400, Rejected, 400),
        ("garbage", Transient, 200),
        ("object", Transient, 200),
    ],
)
def test_fail_scheduler_makes_every_read_fail_until_healed(
    sim: Simulator,
    client: UseapiClient,
    fault: int | str,
    kind: type[SchedulerOutcome],
    status: int,
) -> None:
    video_id = make_id("never", 26)
    sim.create(video_id)
    sim.fail_scheduler(fault)
    for path in (SCHEDULER, AVAILABLE):
        assert get(sim, path).status == status
    outcome = client.scheduler()
    assert isinstance(outcome, kind), outcome
    assert outcome.http_status == status
    assert poll(sim, video_id).status == 404  # only the scheduler fails
    sim.fail_scheduler(None)
    assert executing_ids(client) == (video_id,)


def test_the_fault_bodies_say_what_they_are(sim: Simulator, client: UseapiClient) -> None:
    sim.fail_scheduler("object")
    assert get(sim, SCHEDULER).json() == {"unexpected": True}
    outcome = client.scheduler()
    assert isinstance(outcome, Transient) and "executing" in outcome.reason
    sim.fail_scheduler("garbage")
    outcome = client.scheduler()
    assert isinstance(outcome, Transient) and "not valid JSON" in outcome.reason


@pytest.mark.parametrize("fault", [200, 302, 600, True, "Garbage", "list", 4.5])
def test_fail_scheduler_refuses_what_it_cannot_play(sim: Simulator, fault: object) -> None:
    with pytest.raises(ValueError, match="fault"):
        sim.fail_scheduler(fault)  # type: ignore[arg-type]


def test_a_wrong_token_and_a_revoked_one_get_401_from_the_scheduler(sim: Simulator) -> None:
    sim.create(make_id("never", 27))
    assert get(sim, SCHEDULER, token="wrong").status == 401
    assert get(sim, AVAILABLE, token=None).status == 401
    with UseapiClient(sim.base_url, "wrong") as stranger:
        assert isinstance(stranger.scheduler(), Unauthorized)
    sim.unauthorized_for(0.3)
    assert get(sim, SCHEDULER).status == 401
    time.sleep(0.35)
    assert get(sim, SCHEDULER).status == 200


# -- the log ----------------------------------------------------------------------------------


def test_scheduler_requests_log_when_each_read_was_answered_and_what_it_listed(
    sim: Simulator, client: UseapiClient
) -> None:
    video_id = make_id("completed_0.3", 28)
    began = time.time()
    sim.create(video_id)
    client.scheduler()
    get(sim, AVAILABLE, token="wrong")
    sim.fail_scheduler(503)
    client.scheduler()
    sim.fail_scheduler(None)
    time.sleep(0.35)
    client.scheduler()
    reads = sim.scheduler_requests()
    assert [(read.status, read.ids) for read in reads] == [
        (200, (video_id,)),
        (401, ()),
        (503, ()),
        (200, ()),
    ]
    assert all(isinstance(read, SchedulerRead) for read in reads)
    assert began <= reads[0].at <= reads[1].at <= reads[2].at <= reads[3].at <= time.time()
    assert reads[3].at - reads[0].at >= 0.3


def test_scheduler_reads_are_in_the_request_log_and_reset_forgets_them(
    sim: Simulator, client: UseapiClient
) -> None:
    sim.create(make_id("never", 29))
    client.scheduler()
    get(sim, AVAILABLE)
    logged = [entry for entry in sim.requests if entry.kind == "scheduler"]
    assert [(entry.path, entry.status, entry.video_id) for entry in logged] == [
        (SCHEDULER, 200, None),
        (AVAILABLE, 200, None),
    ]
    assert sim.list_requests() == []
    sim.reset()
    assert sim.scheduler_requests() == []
    assert sim.requests == []
    assert executing_ids(client) == ()  # created videos are forgotten too


# -- the command line -------------------------------------------------------------------------


def test_the_simulate_command_takes_a_scheduler_shape() -> None:
    code = (
        "import sys; from pixverse_tracker.cli.main import main; "
        "sys.exit(main(['simulate', '--port', '0', '--token', 'cli', "
        "'--scheduler-shape', 'videoId']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url), base_url
        headers = {"Authorization": "Bearer cli"}
        requests.get(base_url + "/v2/pixverse/videos/" + make_id("never", 30), headers=headers)
        items = requests.get(base_url + SCHEDULER, headers=headers, timeout=5).json()
        assert [item["videoId"] for item in items] == [make_id("never", 30)]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

"""The push receiver on real Postgres: secret, body cap, validation, and a push as a hint."""

from __future__ import annotations

import io
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from wsgiref.types import WSGIApplication
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
import requests
from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker.db.reports import events_for
from pixverse_tracker.db.sql import current_time
from pixverse_tracker.logs import JsonFormatter, KeyValueFormatter
from pixverse_tracker.models import Video
from pixverse_tracker.service import enqueue as service_enqueue
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import RECEIVER, Secret, SettingsError, load
from pixverse_tracker.web import receiver
from pixverse_tracker.web.builtin_server import make_dev_server
from pixverse_tracker.web.connection_limits import ConnectionLimits
from pixverse_tracker.web.receiver import make_app
from pixverse_tracker.web.receiver_config import ReceiverConfig, from_settings
from pixverse_tracker.web.serve import push_url
from tests.policies import policy_with

SECRET = "cb-Secret_0123456789-DISTINCTIVE"
PUSH_PATH = f"/callbacks/{SECRET}"
CAP = 2048
LATER = policy_with(first_poll_delay=600.0)  # rows are not due for ten minutes unless hinted


def config_from(env: dict[str, str]) -> ReceiverConfig:
    """The receiver's config as `push-receiver` reads it: the settings' RECEIVER concern."""
    return from_settings(load(env, needs=(RECEIVER,)))


UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/nothing"


def vid(n: int) -> str:
    return f"user:7-pixverse:push+test@example.com-video:{n}"


# --- a small WSGI test client -------------------------------------------------------------------


class CountingInput:
    """A wsgi.input that counts the bytes the application took from it."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        line = self._stream.readline(size)
        self.bytes_read += len(line)
        return line

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = self._stream.readlines(hint)
        self.bytes_read += sum(map(len, lines))
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    input: CountingInput = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


AUTO = "auto"


def call(
    app: WSGIApplication,
    method: str = "POST",
    path: str = PUSH_PATH,
    body: bytes | Any = b"",
    *,
    length: str | None = AUTO,
    terminated: bool = False,
    validate: bool = True,
    extra: dict[str, Any] | None = None,
) -> Response:
    """Run one request through ``app`` (checked against PEP 3333 by wsgiref's validator)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    stream = CountingInput(data)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "wsgi.input": stream,
        "CONTENT_TYPE": "application/json",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = str(len(data)) if length == AUTO else length
    if terminated:
        environ["wsgi.input_terminated"] = True
    environ.update(extra or {})
    setup_testing_defaults(environ)
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"], captured["headers"] = status, headers
        return lambda _: None

    result = (validator(app) if validate else app)(environ, start_response)
    try:
        out = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Response(int(captured["status"].split()[0]), dict(captured["headers"]), out, stream)


# --- fixtures and database helpers --------------------------------------------------------------


@pytest.fixture
def rt(pg: sessionmaker[Session], pg_database: str) -> Iterator[Runtime]:
    runtime = Runtime(load({"DATABASE_URL": pg_database}))
    yield runtime
    runtime.close()


@pytest.fixture
def app(rt: Runtime) -> WSGIApplication:
    return make_app(rt, ReceiverConfig(Secret(SECRET), CAP))


@pytest.fixture
def down_app() -> Iterator[WSGIApplication]:
    runtime = Runtime(load({"DATABASE_URL": UNREACHABLE_DB}))
    yield make_app(runtime, ReceiverConfig(Secret(SECRET), CAP))
    runtime.close()


def enqueue(rt: Runtime, *video_ids: str) -> None:
    with rt.sessions.begin() as session:
        service_enqueue.enqueue(session, list(video_ids), LATER)


def row(rt: Runtime, video_id: str) -> dict[str, Any]:
    """The row, less ``hinted_at`` (every push to a pending row records it; see hinted_at())."""
    with rt.sessions() as session:
        found = session.execute(
            text("SELECT * FROM videos WHERE video_id = :v"), {"v": video_id}
        ).mappings()
        values = dict(found.one())
        values.pop("hinted_at")
        return values


def hinted_at(rt: Runtime, video_id: str) -> Any:
    with rt.sessions() as session:
        return session.execute(
            text("SELECT hinted_at FROM videos WHERE video_id = :v"), {"v": video_id}
        ).scalar_one()


def kinds(rt: Runtime, video_id: str) -> list[str]:
    with rt.sessions() as session:
        return [e.kind for e in events_for(session, video_id)]


def now(rt: Runtime) -> Any:
    with rt.sessions() as session:
        return current_time(session)


def finish(rt: Runtime, video_id: str) -> None:
    with rt.sessions.begin() as session:
        at = current_time(session)
        session.execute(
            update(Video)
            .where(Video.video_id == video_id)
            .values(state="done", done_at=at, updated_at=at, next_poll_at=None, status_code=1)
        )


def claim(rt: Runtime, video_id: str) -> None:
    """As a dispatch would: a token, and a lease (and due time) a minute ahead."""
    with rt.sessions.begin() as session:
        until = current_time(session) + timedelta(minutes=1)
        session.execute(
            update(Video)
            .where(Video.video_id == video_id)
            .values(claim_token="a-live-claim", claimed_until=until, next_poll_at=until)
        )


# --- the hint -----------------------------------------------------------------------------------


def test_a_push_for_a_pending_row_makes_it_due_now_and_records_a_hint(
    app: WSGIApplication, rt: Runtime
) -> None:
    enqueue(rt, vid(1))
    assert row(rt, vid(1))["next_poll_at"] > now(rt) + timedelta(minutes=5)

    response = call(app, body={"video_id": vid(1), "video_status": 1, "url": "https://x/1.mp4"})

    assert response.status == 202
    assert response.json() == {"accepted": True, "due_now": True}
    assert response.headers["Content-Type"] == "application/json"
    after = row(rt, vid(1))
    assert after["next_poll_at"] <= now(rt)
    assert kinds(rt, vid(1)) == ["enqueued", "hinted"]
    # a hint, not the truth: nothing from the pushed record is stored
    assert (after["state"], after["status_code"], after["url"], after["record"]) == (
        "pending",
        None,
        None,
        None,
    )


def test_a_second_push_for_a_row_already_due_changes_nothing(
    app: WSGIApplication, rt: Runtime
) -> None:
    enqueue(rt, vid(1))
    call(app, body={"video_id": vid(1)})
    before = row(rt, vid(1))

    response = call(app, body={"video_id": vid(1)})

    assert (response.status, response.json()) == (202, {"accepted": True, "due_now": False})
    assert row(rt, vid(1)) == before
    assert kinds(rt, vid(1)) == ["enqueued", "hinted"]


def test_a_push_for_a_finished_row_leaves_it_exactly_as_it_was(
    app: WSGIApplication, rt: Runtime
) -> None:
    enqueue(rt, vid(2))
    finish(rt, vid(2))
    before = row(rt, vid(2))

    response = call(app, body={"video_id": vid(2), "video_status": 8})

    assert (response.status, response.json()) == (202, {"accepted": True, "due_now": False})
    assert row(rt, vid(2)) == before
    assert "hinted" not in kinds(rt, vid(2))


def test_a_push_for_a_row_being_polled_leaves_the_claim_alone(
    app: WSGIApplication, rt: Runtime
) -> None:
    enqueue(rt, vid(3))
    claim(rt, vid(3))
    before = row(rt, vid(3))

    response = call(app, body={"video_id": vid(3)})

    assert (response.status, response.json()) == (202, {"accepted": True, "due_now": False})
    assert row(rt, vid(3)) == before
    assert before["claim_token"] == "a-live-claim"
    assert "hinted" not in kinds(rt, vid(3))
    # remembered, so a "not yet" from the poll in flight is followed by a poll at once
    assert hinted_at(rt, vid(3)) is not None


def test_a_push_for_an_unknown_id_is_accepted_and_creates_nothing(
    app: WSGIApplication, rt: Runtime
) -> None:
    response = call(app, body={"video_id": vid(404)})

    assert (response.status, response.json()) == (202, {"accepted": True, "due_now": False})
    with rt.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM videos")).scalar_one() == 0
        assert session.execute(text("SELECT count(*) FROM video_events")).scalar_one() == 0


def test_reply_ref_is_used_when_the_body_has_no_video_id(app: WSGIApplication, rt: Runtime) -> None:
    enqueue(rt, vid(5), vid(6))

    by_ref = call(app, body={"replyRef": vid(5), "video_status": 1})
    null_id = call(app, body={"video_id": None, "replyRef": vid(6)})

    assert by_ref.json() == {"accepted": True, "due_now": True}
    assert null_id.json() == {"accepted": True, "due_now": True}
    assert kinds(rt, vid(5))[-1] == kinds(rt, vid(6))[-1] == "hinted"


def test_video_id_wins_over_reply_ref(app: WSGIApplication, rt: Runtime) -> None:
    enqueue(rt, vid(7), vid(8))

    call(app, body={"video_id": vid(7), "replyRef": vid(8)})

    assert kinds(rt, vid(7))[-1] == "hinted"
    assert "hinted" not in kinds(rt, vid(8))


# --- the secret -----------------------------------------------------------------------------


def test_a_wrong_secret_answers_exactly_like_a_path_that_does_not_exist(
    app: WSGIApplication, rt: Runtime
) -> None:
    enqueue(rt, vid(1))
    before = row(rt, vid(1))

    wrong = call(app, path="/callbacks/not-the-secret-at-all-0000", body={"video_id": vid(1)})
    longer = call(app, path=PUSH_PATH + "x", body={"video_id": vid(1)})
    shorter = call(app, path=PUSH_PATH[:-1], body={"video_id": vid(1)})
    other = call(app, path="/nothing/here", body={"video_id": vid(1)})

    for response in (wrong, longer, shorter):
        assert (response.status, response.headers, response.body) == (
            other.status,
            other.headers,
            other.body,
        )
    assert other.status == 404
    assert row(rt, vid(1)) == before


@pytest.mark.parametrize("path", ["/callbacks", "/callbacks/", "/callbacks//", "/"])
def test_a_missing_secret_answers_404(app: WSGIApplication, path: str) -> None:
    response = call(app, path=path, body={"video_id": vid(1)})
    assert response.status == 404
    assert response.json() == {"error": "not found"}


def test_a_secret_with_a_trailing_slash_or_in_another_case_does_not_match(
    app: WSGIApplication,
) -> None:
    assert call(app, path=PUSH_PATH + "/", body={"video_id": vid(1)}).status == 404
    assert call(app, path=PUSH_PATH.upper(), body={"video_id": vid(1)}).status == 404


def test_a_path_with_non_ascii_bytes_is_a_plain_404(app: WSGIApplication) -> None:
    # PEP 3333: PATH_INFO carries the raw bytes decoded as latin-1.
    path = "/callbacks/" + "é\x00ÿ".encode().decode("latin-1")
    assert call(app, path=path, body={"video_id": vid(1)}).status == 404


def test_other_methods_on_the_push_url_answer_405_but_only_with_the_right_secret(
    app: WSGIApplication,
) -> None:
    right = call(app, method="GET", body=b"")
    wrong = call(app, method="GET", path="/callbacks/wrong-wrong-wrong-wrong", body=b"")
    put = call(app, method="PUT", body={"video_id": vid(1)})

    assert (right.status, right.headers["Allow"]) == (405, "POST")
    assert (put.status, put.headers["Allow"]) == (405, "POST")
    assert wrong.status == 404


# --- the body cap -----------------------------------------------------------------------------


def padded(video_id: str, size: int) -> bytes:
    """A valid JSON object of exactly ``size`` bytes."""
    raw = json.dumps({"video_id": video_id}).encode()
    return raw + b" " * (size - len(raw))


def test_a_body_declared_over_the_cap_is_refused_without_reading_a_byte(
    app: WSGIApplication, rt: Runtime
) -> None:
    enqueue(rt, vid(1))
    response = call(app, body=padded(vid(1), CAP + 1))

    assert response.status == 413
    assert response.json() == {"error": f"the body is larger than {CAP} bytes"}
    assert response.input.bytes_read == 0
    assert "hinted" not in kinds(rt, vid(1))


def test_a_huge_declared_length_is_refused_without_reading(app: WSGIApplication) -> None:
    response = call(app, body=b"{}", length=str(10**18))
    assert (response.status, response.input.bytes_read) == (413, 0)


def test_a_body_without_a_length_is_read_no_further_than_one_byte_past_the_cap(
    app: WSGIApplication, rt: Runtime
) -> None:
    enqueue(rt, vid(1))
    response = call(app, body=padded(vid(1), 50 * CAP), length=None, terminated=True)

    assert response.status == 413
    assert response.input.bytes_read <= CAP + 1
    assert "hinted" not in kinds(rt, vid(1))


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_of_exactly_the_cap_is_accepted(
    app: WSGIApplication, rt: Runtime, declared: bool
) -> None:
    enqueue(rt, vid(1))
    response = call(
        app,
        body=padded(vid(1), CAP),
        length=AUTO if declared else None,
        terminated=not declared,
    )
    assert (response.status, response.json()) == (202, {"accepted": True, "due_now": True})


def test_without_a_length_or_a_terminated_stream_the_body_is_not_read(
    app: WSGIApplication,
) -> None:
    # wsgiref and similar servers hand over the raw socket: reading would wait for the client.
    response = call(app, body=padded(vid(1), 100), length=None, terminated=False)

    assert response.status == 400
    assert response.json() == {"error": "the body is empty"}
    assert response.input.bytes_read == 0


def test_a_chunked_body_the_server_does_not_decode_asks_for_a_length(
    app: WSGIApplication,
) -> None:
    # wsgiref passes chunk framing through undecoded; gunicorn decodes it and says so.
    body = b'2d\r\n{"video_id": "user:1-pixverse:a@b.com-video:1"}\r\n0\r\n\r\n'
    response = call(app, body=body, length=None, extra={"HTTP_TRANSFER_ENCODING": "chunked"})

    assert (response.status, response.json()) == (411, {"error": "a Content-Length is required"})
    assert response.input.bytes_read == 0


def test_a_body_shorter_than_its_declared_length_is_refused(app: WSGIApplication) -> None:
    response = call(app, body=json.dumps({"video_id": vid(1)}).encode(), length="500")
    assert (response.status, response.json()) == (400, {"error": "the body was cut short"})


@pytest.mark.parametrize("length", ["-1", "12abc", "1e3", "²"])
def test_a_malformed_content_length_is_refused(app: WSGIApplication, length: str) -> None:
    response = call(app, body=b"{}", length=length, validate=False)
    assert (response.status, response.json()) == (400, {"error": "invalid Content-Length"})
    assert response.input.bytes_read == 0


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "the body is empty"),
        (b"{not json", "the body is not valid JSON"),
        (b"\xff\xfe\x00garbage", "the body is not valid JSON"),
        (b"[" * 500 + b"]" * 500, "the body is not a JSON object"),
        (b'["a list"]', "the body is not a JSON object"),
        (b'"a string"', "the body is not a JSON object"),
        (b"null", "the body is not a JSON object"),
        (b"{}", "the body has no video_id (nor a replyRef that is a video id)"),
        (
            b'{"replyRef": "order-42"}',
            "the body has no video_id (nor a replyRef that is a video id)",
        ),
        (b'{"video_id": 42}', "video_id is not a string"),
        (b'{"video_id": ""}', "video_id is empty"),
        (b'{"video_id": "user:1-pixverse:a@b.com-video:1 "}', "video_id contains whitespace"),
        (b'{"video_id": "../../etc/passwd"}', "video_id does not look like"),
        (b'{"video_id": "' + b"9" * 600 + b'"}', "video_id is 600 characters long"),
    ],
)
def test_bodies_without_a_usable_id_are_refused_with_a_short_reason(
    down_app: WSGIApplication, body: bytes, error: str
) -> None:
    # down_app: a refusal must not need the database at all.
    response = call(down_app, body=body)
    assert response.status == 400
    assert response.json()["error"].startswith(error)


def test_deeply_nested_json_within_the_cap_is_a_400_not_a_crash(rt: Runtime) -> None:
    big = make_app(rt, ReceiverConfig(Secret(SECRET), 262_144))
    response = call(big, body=b"[" * 200_000)
    assert (response.status, response.json()) == (400, {"error": "the body is not valid JSON"})


# --- the database down, health ------------------------------------------------------------------


def test_a_database_outage_answers_503_so_the_sender_may_retry(
    down_app: WSGIApplication,
) -> None:
    response = call(down_app, body={"video_id": vid(1)})

    assert response.status == 503
    assert response.json() == {"error": "database unavailable"}
    assert response.headers["Retry-After"] == "30"


def test_healthz_answers_ok_without_the_database(down_app: WSGIApplication) -> None:
    get = call(down_app, method="GET", path="/healthz", body=b"")
    head = call(down_app, method="HEAD", path="/healthz", body=b"")
    post = call(down_app, method="POST", path="/healthz", body=b"{}")

    assert (get.status, get.body, get.headers["Content-Type"]) == (
        200,
        b"ok",
        "text/plain; charset=utf-8",
    )
    assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", "2")
    assert (post.status, post.headers["Allow"]) == (405, "GET, HEAD")


# --- logs -----------------------------------------------------------------------------------


def test_every_request_logs_one_line_and_never_the_secret(
    app: WSGIApplication, down_app: WSGIApplication, rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    enqueue(rt, vid(1))
    caplog.set_level(logging.DEBUG, logger="tracker.push")
    requests_made = [
        call(app, body={"video_id": vid(1)}),
        call(app, body={"video_id": vid(2)}),
        call(app, body={"video_id": SECRET}),
        call(app, body={"video_id": "x" + SECRET}),
        call(app, body=padded(vid(1), CAP + 1)),
        call(app, method="GET"),
        call(app, path=PUSH_PATH + "/extra"),
        call(app, path="/tracker" + PUSH_PATH),
        call(app, path="/" + SECRET),
        call(app, method="GET", path="/healthz"),
        call(down_app, body={"video_id": vid(1)}),
    ]

    lines = [r for r in caplog.records if getattr(r, "action", None) == "push"]
    assert len(lines) == len(requests_made)
    formatted = [f.format(r) for r in lines for f in (KeyValueFormatter(), JsonFormatter())]
    assert formatted and not [line for line in formatted if SECRET in line]
    first = JsonFormatter().format(lines[0])
    assert json.loads(first) | {"ts": None, "seconds": None} == {
        "ts": None,
        "level": "INFO",
        "logger": "tracker.push",
        "action": "push",
        "outcome": "due_now",
        "status": 202,
        "method": "POST",
        "path": "/callbacks/****",
        "video_id": vid(1),
        "seconds": None,
    }
    outcomes = [(r.__dict__["fields"]["outcome"], r.__dict__["fields"]["status"]) for r in lines]
    assert outcomes == [
        ("due_now", 202),
        ("ignored", 202),
        ("invalid", 400),
        ("invalid", 400),
        ("too_large", 413),
        ("method_not_allowed", 405),
        ("wrong_secret", 404),
        ("not_found", 404),
        ("not_found", 404),
        ("health", 200),
        ("db_error", 503),
    ]
    assert lines[7].__dict__["fields"]["path"] == "/tracker/callbacks/****"
    assert lines[-1].levelno == logging.ERROR


# --- configuration ----------------------------------------------------------------------------


def test_the_config_reads_the_secret_and_the_default_cap() -> None:
    config = config_from({"TRACKER_PUSH_SECRET": f"  {SECRET} "})
    assert config == ReceiverConfig(Secret(SECRET), 262_144)
    assert SECRET not in repr(config)
    assert config_from({"TRACKER_PUSH_SECRET": SECRET, "TRACKER_PUSH_MAX_BYTES": "4096"}) == (
        ReceiverConfig(Secret(SECRET), 4096)
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "TRACKER_PUSH_SECRET is not set"),
        ({"TRACKER_PUSH_SECRET": "   "}, "TRACKER_PUSH_SECRET is not set"),
        ({"TRACKER_PUSH_SECRET": "short-secret-15"}, "is 15 characters long"),
        ({"TRACKER_PUSH_SECRET": "x" * 257}, "is 257 characters long"),
        ({"TRACKER_PUSH_SECRET": "has/a/slash/in/it/0123"}, "may only hold letters"),
        ({"TRACKER_PUSH_SECRET": "has?query=1&more=2345"}, "may only hold letters"),
        ({"TRACKER_PUSH_SECRET": "ünïcödé-secret-value-1"}, "may only hold letters"),
        (
            {"TRACKER_PUSH_SECRET": SECRET, "TRACKER_PUSH_MAX_BYTES": "big"},
            "TRACKER_PUSH_MAX_BYTES='big' is not a whole number",
        ),
        (
            {"TRACKER_PUSH_SECRET": SECRET, "TRACKER_PUSH_MAX_BYTES": "100"},
            "TRACKER_PUSH_MAX_BYTES='100' is out of range",
        ),
        (
            {"TRACKER_PUSH_SECRET": SECRET, "TRACKER_PUSH_MAX_BYTES": "999999999"},
            "TRACKER_PUSH_MAX_BYTES='999999999' is out of range",
        ),
    ],
)
def test_a_bad_config_is_refused_naming_the_variable_without_showing_the_secret(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        config_from(env)
    assert message in str(caught.value)
    secret = env.get("TRACKER_PUSH_SECRET", "").strip()
    if len(secret) > 3:
        assert secret not in str(caught.value)


# --- production entry point and the development server -------------------------------------------


@pytest.fixture
def clean_production(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Forget the lazily built app, and give the root logger back as it was afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(receiver, "_built", None)
    yield
    built = receiver._built
    if built is not None:
        built.rt.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_production_application_builds_itself_once_from_the_environment(
    rt: Runtime, pg_database: str, monkeypatch: pytest.MonkeyPatch, clean_production: None
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_database)
    monkeypatch.setenv("TRACKER_PUSH_SECRET", SECRET)
    enqueue(rt, vid(1))

    first = call(receiver.application, body={"video_id": vid(1)})
    built = receiver._built
    health = call(receiver.application, method="GET", path="/healthz")

    assert (first.status, first.json()) == (202, {"accepted": True, "due_now": True})
    assert health.status == 200
    assert built is not None and receiver._built is built
    assert kinds(rt, vid(1))[-1] == "hinted"


def test_the_production_application_without_a_secret_fails_every_request_even_health(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, clean_production: None
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_database)
    monkeypatch.delenv("TRACKER_PUSH_SECRET", raising=False)

    health = call(receiver.application, method="GET", path="/healthz")
    push = call(receiver.application, body={"video_id": vid(1)})

    assert (health.status, push.status) == (500, 500)
    assert push.json() == {"error": "receiver misconfigured"}
    assert receiver._built is None


def test_the_production_application_without_database_url_fails_and_writes_no_local_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_production: None
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("TRACKER_PUSH_SECRET", SECRET)

    health = call(receiver.application, method="GET", path="/healthz")
    push = call(receiver.application, body={"video_id": vid(1)})

    assert (health.status, push.status) == (500, 500)
    assert receiver._built is None
    assert list(tmp_path.iterdir()) == [], "no embedded SQLite file behind the receiver"


def test_the_development_server_takes_a_push_over_http_and_keeps_the_secret_off_stderr(
    rt: Runtime, capfd: pytest.CaptureFixture[str]
) -> None:
    enqueue(rt, vid(1))
    server = make_dev_server("127.0.0.1", 0, rt, ReceiverConfig(Secret(SECRET), CAP))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        pushed = requests.post(base + PUSH_PATH, json={"video_id": vid(1)}, timeout=10)
        wrong = requests.post(base + "/callbacks/guess", json={"video_id": vid(1)}, timeout=10)
        health = requests.get(base + "/healthz", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

    assert (pushed.status_code, pushed.json()) == (202, {"accepted": True, "due_now": True})
    assert wrong.status_code == 404
    assert (health.status_code, health.text) == (200, "ok")
    assert row(rt, vid(1))["next_poll_at"] <= now(rt)
    assert push_url(server) == f"{base}/callbacks/****"
    out, err = capfd.readouterr()
    assert SECRET not in out + err


def test_a_path_cannot_forge_log_lines_and_refusals_log_their_reason(
    app: WSGIApplication, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tracker.push")

    call(app, method="GET", path="/x\n2026-01-01T00:00:00Z INFO forged line")
    call(app, body={"video_id": "nope"})

    text_lines = [KeyValueFormatter().format(r) for r in caplog.records]
    assert len(text_lines) == 2 and all("\n" not in line for line in text_lines)
    assert "path=/x%0A2026-01-01T00:00:00Z%20INFO%20forged%20line" in text_lines[0]
    assert "detail='video_id does not look like" in text_lines[1]


# --- the built-in server's limits (the real processes: tests/e2e/test_receiver_slow_clients.py) ---


@contextmanager
def dev_server(rt: Runtime, limits: ConnectionLimits) -> Iterator[int]:
    """The built-in server with ``limits``, serving in a thread; yields its port."""
    server = make_dev_server("127.0.0.1", 0, rt, ReceiverConfig(Secret(SECRET), CAP, limits))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """All the server sent before it closed the connection (by FIN or by reset)."""
    sock.settimeout(timeout)
    answer = b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass  # closed with our unread bytes still in its buffer
    return answer


def test_the_config_reads_the_connection_limits() -> None:
    env = {"TRACKER_PUSH_SECRET": SECRET, "TRACKER_PUSH_MAX_CONNECTIONS": "7"}
    assert config_from(env).limits == ConnectionLimits(max_connections=7)
    assert config_from({"TRACKER_PUSH_SECRET": SECRET}).limits == ConnectionLimits()


def test_a_body_that_misses_its_deadline_is_answered_408_and_logged(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracker.push")
    # One second instead of the default 20, so the test waits one; e2e covers the default.
    with (
        dev_server(rt, ConnectionLimits(body_timeout=1.0)) as port,
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        sock.sendall(
            f"POST {PUSH_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{{".encode()
        )
        answer = read_until_closed(sock, 10)

    assert answer.startswith(b"HTTP/1.0 408 Request Timeout")
    assert answer.endswith(b'{"error": "the body did not arrive in time"}')
    (record,) = [r for r in caplog.records if r.name == "tracker.push"]
    assert record.fields["outcome"] == "body_timeout"  # type: ignore[attr-defined]


def test_headers_trickling_past_their_deadline_close_the_connection_without_an_answer(
    rt: Runtime,
) -> None:
    # One second instead of the default 10 (covered by e2e); each byte comes well within it,
    # so only a deadline on the whole headers can end this request.
    with (
        dev_server(rt, ConnectionLimits(header_timeout=1.0)) as port,
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        ended_by_server = False
        for _ in range(30):  # 6 s of trickle on offer, a byte every 0.2 s
            try:
                sock.sendall(b"X")
            except OSError:  # reset: the server closed it
                ended_by_server = True
                break
            time.sleep(0.2)
            if select.select([sock], [], [], 0)[0]:
                ended_by_server = True
                break
        answer = read_until_closed(sock, 5) if ended_by_server else None

    assert ended_by_server
    assert answer == b""


def test_at_the_connection_cap_new_connections_wait_until_a_slot_frees(rt: Runtime) -> None:
    # A cap of 3 instead of 1,000: the test must fill it (e2e runs 500 at the default).
    with dev_server(rt, ConnectionLimits(max_connections=3)) as port:
        slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            waiting = socket.create_connection(("127.0.0.1", port), timeout=5)
            waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            with pytest.raises(TimeoutError):  # queued in the kernel, not accepted
                waiting.settimeout(1.5)
                waiting.recv(1)
            slow[0].close()
            answer = read_until_closed(waiting, 5)
            waiting.close()
        finally:
            for sock in slow:
                sock.close()

    assert answer.startswith(b"HTTP/1.0 200 OK") and answer.endswith(b"ok")

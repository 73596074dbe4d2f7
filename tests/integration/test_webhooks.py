"""Completion callbacks end to end: outbox in the same transaction, signed POST, retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from worker import api, poller, sender
from worker.runtime import Runtime
from worker.settings import load
from worker.simulator import Simulator, make_id
from worker.webhooks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify

SECRET = "whsec-test-1234567890"


class Receiver:
    """An application endpoint on loopback that records what it got; answers from a script."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(token="tok") as sim:
        yield sim


def _runtime(pg_database: str, simulator: Simulator, **extra: str) -> Runtime:
    env = {
        "DATABASE_URL": pg_database,
        "USEAPI_TOKEN": "tok",
        "USEAPI_BASE_URL": simulator.base_url,
        "TRACKER_FIRST_POLL_DELAY": "0",
        "TRACKER_POLL_INTERVAL_MIN": "0.2",
        "TRACKER_POLL_INTERVAL_MAX": "0.5",
        "TRACKER_LIST_INTERVAL": "0.2",
        "TRACKER_DISPATCH_INTERVAL": "0.5",
        "TRACKER_RATE_LIMIT": "50",
        "TRACKER_HTTP_TIMEOUT": "1",
        "TRACKER_WEBHOOK_SECRET": SECRET,
        **extra,
    }
    return Runtime(load(env))


def _drive_until_finished(rt: Runtime, rounds: int = 40) -> None:
    for _ in range(rounds):
        for batch in poller.dispatch(rt):
            poller.poll_batch(rt, batch)
        with rt.sessions.begin() as session:
            left = session.execute(text("SELECT count(*) FROM videos WHERE state = 'pending'"))
            if left.scalar_one() == 0:
                return
        threading.Event().wait(0.2)
    raise AssertionError("videos still pending")


def _outbox(rt: Runtime) -> list[Any]:
    with rt.sessions.begin() as session:
        return list(session.execute(text("SELECT * FROM callback_outbox ORDER BY id")).mappings())


def test_a_finished_video_is_posted_once_signed_with_its_row(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([200])
    rt = _runtime(pg_database, simulator)
    try:
        done, gone = make_id("completed_0.3", 1), make_id("deleted_0", 2)
        api.enqueue([done, gone], callback_url=receiver.url, rt=rt)
        _drive_until_finished(rt)
        owed = _outbox(rt)
        assert sorted((o["video_id"], o["kind"]) for o in owed) == [
            (done, "done"),
            (gone, "abandoned"),
        ]
        assert sender.deliver_due(rt) == 2
        assert sender.deliver_due(rt) == 0  # nothing owed twice
        assert len(receiver.received) == 2
        for headers, body in receiver.received:
            assert verify(SECRET, body, headers[SIGNATURE_HEADER])
            payload = json.loads(body)
            assert headers[IDEMPOTENCY_HEADER] == payload["idempotency_key"]
            if payload["video"]["video_id"] == done:
                assert payload["event"] == "video.done"
                assert payload["video"]["status_name"] == "COMPLETED"
                assert payload["video"]["url"].endswith("/1.mp4")
            else:
                assert payload["event"] == "video.abandoned"
                assert payload["video"]["abandon_reason"].startswith("deleted")
        assert all(o["delivered_at"] is not None for o in _outbox(rt))
        assert "tok" not in b"".join(body for _, body in receiver.received).decode()
    finally:
        rt.close()
        receiver.close()


def test_a_failing_endpoint_is_retried_with_the_same_body_and_key_until_2xx(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([500, 503, 200])
    rt = _runtime(pg_database, simulator)
    try:
        api.enqueue([make_id("completed_0", 3)], callback_url=receiver.url, rt=rt)
        _drive_until_finished(rt)
        for _ in range(3):
            sender.deliver_due(rt)
            with rt.sessions.begin() as session:  # make the retry due now
                session.execute(text("UPDATE callback_outbox SET next_attempt_at = now()"))
        bodies = {body for _, body in receiver.received}
        keys = {headers[IDEMPOTENCY_HEADER] for headers, _ in receiver.received}
        assert len(receiver.received) == 3 and len(bodies) == 1 and len(keys) == 1
        (row,) = _outbox(rt)
        assert row["attempts"] == 3 and row["delivered_at"] is not None
        assert row["last_status"] == 200
    finally:
        rt.close()
        receiver.close()


def test_after_the_last_attempt_a_delivery_is_marked_failed_not_retried_forever(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([500] * 10)
    rt = _runtime(pg_database, simulator, TRACKER_WEBHOOK_MAX_ATTEMPTS="2")
    try:
        api.enqueue([make_id("completed_0", 4)], callback_url=receiver.url, rt=rt)
        _drive_until_finished(rt)
        for _ in range(4):
            sender.deliver_due(rt)
            with rt.sessions.begin() as session:
                session.execute(
                    text(
                        "UPDATE callback_outbox SET next_attempt_at = now() WHERE failed_at IS NULL"
                    )
                )
        (row,) = _outbox(rt)
        assert row["attempts"] == 2 and row["failed_at"] is not None and row["delivered_at"] is None
        assert len(receiver.received) == 2
    finally:
        rt.close()
        receiver.close()


def test_the_global_default_url_applies_to_ids_without_their_own_and_none_without_either(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([])
    rt = _runtime(pg_database, simulator, TRACKER_WEBHOOK_URL=receiver.url)
    plain = _runtime(pg_database, simulator)
    try:
        api.enqueue([make_id("completed_0", 5)], rt=rt)
        _drive_until_finished(rt)
        assert [o["url"] for o in _outbox(rt)] == [receiver.url]
        api.enqueue([make_id("completed_0", 6)], rt=plain)
        _drive_until_finished(plain)
        assert len(_outbox(rt)) == 1  # no URL anywhere: nothing owed
    finally:
        rt.close()
        plain.close()
        receiver.close()


def test_without_a_signing_secret_nothing_is_sent_and_the_delivery_waits(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([])
    rt = _runtime(pg_database, simulator, TRACKER_WEBHOOK_SECRET="")
    try:
        api.enqueue([make_id("completed_0", 7)], callback_url=receiver.url, rt=rt)
        _drive_until_finished(rt)
        assert sender.deliver_due(rt) == 0
        assert receiver.received == []
        (row,) = _outbox(rt)
        assert row["last_error"] == "TRACKER_WEBHOOK_SECRET is not set"
        assert row["delivered_at"] is None and row["failed_at"] is None
    finally:
        rt.close()
        receiver.close()


def test_a_rolled_back_state_change_leaves_no_callback_behind(
    pg: sessionmaker[Session],
    pg_database: str,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import store

    receiver = Receiver([])
    rt = _runtime(pg_database, simulator)
    original = store._add_events

    def fail_after_outbox(*args: Any, **kwargs: Any) -> None:
        raise store_error

    from sqlalchemy.exc import OperationalError

    store_error = OperationalError("INSERT", {}, Exception("connection lost"))
    try:
        api.enqueue([make_id("completed_0", 8)], callback_url=receiver.url, rt=rt)
        monkeypatch.setattr(store, "_add_events", fail_after_outbox)
        for batch in poller.dispatch(rt):
            poller.poll_batch(rt, batch)
        assert _outbox(rt) == []  # the failed transaction took its outbox row with it
        monkeypatch.setattr(store, "_add_events", original)
        with rt.sessions.begin() as session:
            session.execute(text("UPDATE videos SET next_poll_at = now(), claim_token = NULL"))
        _drive_until_finished(rt)
        assert len(_outbox(rt)) == 1
    finally:
        rt.close()
        receiver.close()


def test_an_invalid_callback_url_is_refused_at_enqueue_and_nothing_is_stored(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    from worker.webhooks import InvalidCallbackUrl

    rt = _runtime(pg_database, simulator)
    try:
        with pytest.raises(InvalidCallbackUrl):
            api.enqueue([make_id("completed_0", 9)], callback_url="gopher://x", rt=rt)
        assert api.get(make_id("completed_0", 9), rt=rt) is None
    finally:
        rt.close()

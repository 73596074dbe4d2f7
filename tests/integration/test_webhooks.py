"""Webhooks end to end: outbox in the same transaction, signed POST, retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from pixverse_tracker import api
from pixverse_tracker.rules.webhooks import ID_HEADER, IDEMPOTENCY_HEADER
from pixverse_tracker.service import sender
from pixverse_tracker.service.batch import poll_batch
from pixverse_tracker.service.dispatch import dispatch
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import load
from pixverse_tracker.testing import Simulator, make_id
from tests.endpoints import Receiver

SECRET = "whsec-test-1234567890"  # a plain secret (no whsec_ prefix): its bytes are the key


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
        # The receivers listen on loopback, which the default refuses; the refusal itself is
        # tested below (test_a_loopback_endpoint_is_refused_by_default_and_nothing_is_sent).
        "TRACKER_WEBHOOK_ALLOW_PRIVATE": "true",
        **extra,
    }
    return Runtime(load(env))


def _drive_until_finished(rt: Runtime, rounds: int = 40) -> None:
    for _ in range(rounds):
        for batch in dispatch(rt):
            poll_batch(rt, batch)
        with rt.sessions.begin() as session:
            left = session.execute(text("SELECT count(*) FROM videos WHERE state = 'pending'"))
            if left.scalar_one() == 0:
                return
        threading.Event().wait(0.2)
    raise AssertionError("videos still pending")


def _outbox(rt: Runtime) -> list[Any]:
    with rt.sessions.begin() as session:
        return list(session.execute(text("SELECT * FROM webhook_outbox ORDER BY id")).mappings())


def test_a_finished_video_is_posted_once_signed_with_its_row(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([200])
    rt = _runtime(pg_database, simulator)
    try:
        done, gone = make_id("completed_0.3", 1), make_id("deleted_0", 2)
        api.enqueue([done, gone], webhook_url=receiver.url, rt=rt)
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
            # what a receiving application does, with the reference library
            payload = Webhook(SECRET.encode()).verify(body, headers)
            assert headers[ID_HEADER] == payload["idempotency_key"]
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
        api.enqueue([make_id("completed_0", 3)], webhook_url=receiver.url, rt=rt)
        _drive_until_finished(rt)
        for _ in range(3):
            sender.deliver_due(rt)
            with rt.sessions.begin() as session:  # make the retry due now
                session.execute(text("UPDATE webhook_outbox SET next_attempt_at = now()"))
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
        api.enqueue([make_id("completed_0", 4)], webhook_url=receiver.url, rt=rt)
        _drive_until_finished(rt)
        for _ in range(4):
            sender.deliver_due(rt)
            with rt.sessions.begin() as session:
                session.execute(
                    text(
                        "UPDATE webhook_outbox SET next_attempt_at = now() WHERE failed_at IS NULL"
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
        api.enqueue([make_id("completed_0", 7)], webhook_url=receiver.url, rt=rt)
        _drive_until_finished(rt)
        assert sender.deliver_due(rt) == 0
        assert receiver.received == []
        (row,) = _outbox(rt)
        assert row["last_error"] == "TRACKER_WEBHOOK_SECRET is not set"
        assert row["delivered_at"] is None and row["failed_at"] is None
    finally:
        rt.close()
        receiver.close()


def test_a_rolled_back_state_change_leaves_no_webhook_behind(
    pg: sessionmaker[Session],
    pg_database: str,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pixverse_tracker.service import apply as service_apply

    receiver = Receiver([])
    rt = _runtime(pg_database, simulator)
    original = service_apply.add_events

    def fail_after_outbox(*args: Any, **kwargs: Any) -> None:
        raise store_error

    from sqlalchemy.exc import OperationalError

    store_error = OperationalError("INSERT", {}, Exception("connection lost"))
    try:
        api.enqueue([make_id("completed_0", 8)], webhook_url=receiver.url, rt=rt)
        monkeypatch.setattr(service_apply, "add_events", fail_after_outbox)
        for batch in dispatch(rt):
            poll_batch(rt, batch)
        assert _outbox(rt) == []  # the failed transaction took its outbox row with it
        monkeypatch.setattr(service_apply, "add_events", original)
        with rt.sessions.begin() as session:
            session.execute(text("UPDATE videos SET next_poll_at = now(), claim_token = NULL"))
        _drive_until_finished(rt)
        assert len(_outbox(rt)) == 1
    finally:
        rt.close()
        receiver.close()


def test_an_invalid_webhook_url_is_refused_at_enqueue_and_nothing_is_stored(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    from pixverse_tracker.rules.webhooks import InvalidWebhookUrl

    rt = _runtime(pg_database, simulator)
    try:
        with pytest.raises(InvalidWebhookUrl):
            api.enqueue([make_id("completed_0", 9)], webhook_url="gopher://x", rt=rt)
        assert api.get(make_id("completed_0", 9), rt=rt) is None
    finally:
        rt.close()


def test_the_old_callback_url_keyword_still_stores_the_url_with_a_deprecation_warning(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    rt = _runtime(pg_database, simulator)
    video = make_id("completed_0", 10)
    try:
        with pytest.warns(DeprecationWarning, match="use webhook_url"):
            report = api.enqueue([video], callback_url="https://app.example.com/hook", rt=rt)
        assert report.added == [video]
        with rt.sessions.begin() as session:
            stored = session.execute(
                text("SELECT webhook_url FROM videos WHERE video_id = :v"), {"v": video}
            ).scalar_one()
        assert stored == "https://app.example.com/hook"
    finally:
        rt.close()


def _finished_with_webhook(rt: Runtime, url: str, n: int) -> None:
    """One id, finished, with a delivery to ``url`` owed."""
    api.enqueue([make_id("completed_0", n)], webhook_url=url, rt=rt)
    _drive_until_finished(rt)
    assert len(_outbox(rt)) == 1


# --- issue 11, item 1: a slow endpoint is cut off at the deadline --------------------------------


def test_an_endpoint_that_drips_a_byte_every_two_seconds_is_cut_off_at_the_deadline(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    from tests.endpoints import DripEndpoint

    # The attack as reported, against the default TRACKER_WEBHOOK_TIMEOUT (10 s): one byte
    # every 2 s reset the 10 s read timeout, and one delivery lasted 98 s.
    endpoint = DripEndpoint(gap=2.0, limit=40.0)
    rt = _runtime(pg_database, simulator)
    try:
        _finished_with_webhook(rt, endpoint.url, 20)
        deadline = rt.settings.webhook_timeout
        started = time.monotonic()
        assert sender.deliver_due(rt) == 0
        took = time.monotonic() - started
        # the deadline and one drip of slack (the cut-off is noticed between two bytes)
        assert took < deadline + 2.0, f"the delivery held its sender for {took:.1f}s"
        assert took < sender.lease(deadline)  # its result was stored while the claim held
        (row,) = _outbox(rt)
        assert row["attempts"] == 1 and row["claim_token"] is None
        assert row["last_error"] == f"no answer within the {deadline:g}s deadline"
        assert row["next_attempt_at"] is not None and row["failed_at"] is None  # retried later
        assert len(endpoint.visits) == 1
    finally:
        rt.close()
        endpoint.close()


def test_each_result_is_stored_as_soon_as_it_is_known_not_after_the_slowest(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    from tests.endpoints import DripEndpoint

    slow = DripEndpoint(gap=0.5, limit=30.0)
    fast = Receiver([])
    # A short deadline keeps the test short; the default deadline is exercised above.
    rt = _runtime(pg_database, simulator, TRACKER_WEBHOOK_TIMEOUT="4")
    try:
        api.enqueue([make_id("completed_0", 21)], webhook_url=slow.url, rt=rt)
        api.enqueue([make_id("completed_0", 22)], webhook_url=fast.url, rt=rt)
        _drive_until_finished(rt)
        delivering = threading.Thread(target=sender.deliver_due, args=(rt,))
        delivering.start()
        stored_early = False
        while delivering.is_alive() and not stored_early:
            stored_early = any(o["delivered_at"] is not None for o in _outbox(rt))
            time.sleep(0.1)
        stored_early = stored_early and delivering.is_alive()
        delivering.join()
        assert stored_early, "the fast delivery was stored only after the slow one ended"
    finally:
        rt.close()
        slow.close()
        fast.close()


# --- issue 11, item 5: Standard Webhooks signatures, not replayable ------------------------------


def test_a_receiver_verifies_deliveries_with_the_standard_webhooks_library_and_a_whsec_secret(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    receiver = Receiver([500, 200])
    rt = _runtime(pg_database, simulator, TRACKER_WEBHOOK_SECRET=secret)
    try:
        _finished_with_webhook(rt, receiver.url, 23)
        sender.deliver_due(rt)
        with rt.sessions.begin() as session:  # make the retry due now
            session.execute(text("UPDATE webhook_outbox SET next_attempt_at = now()"))
        time.sleep(1.1)  # so the retry is signed in another second
        sender.deliver_due(rt)
        (first, second) = receiver.received
        for headers, body in receiver.received:
            Webhook(secret).verify(body, headers)  # raises if it does not verify
        # a retry: the same message id and body, signed afresh with its own time
        assert first[0][ID_HEADER] == second[0][ID_HEADER] and first[1] == second[1]
        assert first[0]["webhook-timestamp"] != second[0]["webhook-timestamp"]
    finally:
        rt.close()
        receiver.close()


def test_a_captured_delivery_replayed_later_fails_verification(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    from standardwebhooks.webhooks import WebhookVerificationError

    from pixverse_tracker.rules import webhooks

    receiver = Receiver([])
    rt = _runtime(pg_database, simulator)
    try:
        _finished_with_webhook(rt, receiver.url, 24)
        sender.deliver_due(rt)
        ((headers, body),) = receiver.received
        key = webhooks.signing_key(SECRET)
        sent_at = int(headers["webhook-timestamp"])
        assert webhooks.verify(key, headers, body, now=sent_at + 60)
        # replayed six minutes later, as captured: too old
        assert not webhooks.verify(key, headers, body, now=sent_at + 360)
        # replayed with a fresh timestamp: the signature covers the timestamp, so it fails
        refreshed = {**headers, "webhook-timestamp": str(int(time.time()) + 360)}
        assert not webhooks.verify(key, refreshed, body, now=time.time() + 360)
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            Webhook(SECRET.encode()).verify(
                body, {**headers, "webhook-timestamp": str(sent_at + 1)}
            )
        # and the reference library refuses a captured delivery signed ten minutes ago
        old = webhooks.signed_headers(key, headers[ID_HEADER], "done", body, now=time.time() - 600)
        with pytest.raises(WebhookVerificationError, match="too old"):
            Webhook(SECRET.encode()).verify(body, old)
    finally:
        rt.close()
        receiver.close()


# --- issue 11, item 4: addresses checked where the connection goes -------------------------------


def test_a_loopback_endpoint_is_refused_by_default_and_nothing_is_sent(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([])
    rt = _runtime(pg_database, simulator, TRACKER_WEBHOOK_ALLOW_PRIVATE="")  # the default
    try:
        _finished_with_webhook(rt, receiver.url, 25)
        assert sender.deliver_due(rt) == 0
        assert receiver.received == []
        (row,) = _outbox(rt)
        assert row["last_error"] == (
            "refused: 127.0.0.1 is a loopback address, allowed only with "
            "TRACKER_WEBHOOK_ALLOW_PRIVATE=true or an entry in TRACKER_WEBHOOK_ALLOWLIST"
        )
        assert row["last_status"] is None
        # a setting can allow it: retried later, not failed for good
        assert row["failed_at"] is None and row["next_attempt_at"] is not None
    finally:
        rt.close()
        receiver.close()


def test_an_allowlisted_network_is_delivered_to_without_allowing_every_private_address(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([])
    rt = _runtime(
        pg_database,
        simulator,
        TRACKER_WEBHOOK_ALLOW_PRIVATE="",
        TRACKER_WEBHOOK_ALLOWLIST="127.0.0.0/8",
    )
    try:
        _finished_with_webhook(rt, receiver.url, 26)
        assert sender.deliver_due(rt) == 1
        assert len(receiver.received) == 1
    finally:
        rt.close()
        receiver.close()


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "2130706433", "0x7f.1", "127.1", "localhost", "0177.0.0.1"],
)
def test_every_spelling_of_loopback_is_recognised_and_refused_by_default(host: str) -> None:
    from pixverse_tracker.rules.addresses import AddressPolicy
    from pixverse_tracker.service import outbound

    receiver = Receiver([])
    try:
        url = f"http://{host}:{receiver.port}/hooks"
        attempt = outbound.post(url, b"{}", {}, AddressPolicy(), 5.0)
        assert not attempt.ok and attempt.error is not None
        assert "loopback address" in attempt.error and not attempt.permanent
        assert receiver.received == []
        # allowed, the same spelling reaches the endpoint: the refusal was the rule, not a typo
        if host != "[::1]":  # the receiver listens on IPv4 only
            assert outbound.post(url, b"{}", {}, AddressPolicy(allow_private=True), 5.0).ok
    finally:
        receiver.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://0xa9fea9fe/",
        "http://0.0.0.0:5432/",
        "http://224.0.0.1/",
    ],
)
def test_an_address_that_is_never_allowed_is_refused_at_enqueue_and_nothing_is_stored(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator, url: str
) -> None:
    from pixverse_tracker.rules.webhooks import InvalidWebhookUrl

    rt = _runtime(pg_database, simulator)  # even with private addresses allowed
    try:
        with pytest.raises(InvalidWebhookUrl, match="which is never allowed"):
            api.enqueue([make_id("completed_0", 27)], webhook_url=url, rt=rt)
        assert api.get(make_id("completed_0", 27), rt=rt) is None
    finally:
        rt.close()


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to() -> None:
    from pixverse_tracker.rules.addresses import AddressPolicy
    from pixverse_tracker.service import outbound

    receiver = Receiver([])
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[Any]:
        # a name server that answers differently each time: loopback first, then metadata
        import ipaddress

        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1" if len(lookups) == 1 else "169.254.169.254")]

    try:
        url = f"http://hooks.example.test:{receiver.port}/hooks?k=1"
        allowed = AddressPolicy(allow_private=True)
        attempt = outbound.post(url, b"{}", {}, allowed, 5.0, resolve=rebinding)
        assert attempt.ok and lookups == ["hooks.example.test"]
        ((headers, _),) = receiver.received
        assert headers["Host"] == f"hooks.example.test:{receiver.port}"  # the URL's, not the IP
        # the second answer is checked like the first, and nothing is sent
        attempt = outbound.post(url, b"{}", {}, allowed, 5.0, resolve=rebinding)
        assert not attempt.ok and attempt.permanent
        assert attempt.error == (
            "refused: hooks.example.test resolved to 169.254.169.254 is a cloud metadata address, "
            "which is never allowed"
        )
        assert len(receiver.received) == 1
    finally:
        receiver.close()


# --- issue 11, item 8: a webhook URL's secrets stay out of errors and logs ----------------------


def test_a_webhook_urls_query_never_reaches_last_error_or_the_log(
    pg: sessionmaker[Session],
    pg_database: str,
    simulator: Simulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook?token=app-secret-5e1f"
    rt = _runtime(pg_database, simulator)
    try:
        _finished_with_webhook(rt, url, 28)
        with caplog.at_level("INFO", logger="tracker.webhooks"):
            sender.deliver_due(rt)
        (row,) = _outbox(rt)
        assert row["last_error"] == "connection refused"
        assert row["url"] == url  # kept whole where it is needed: to deliver
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert warnings, caplog.text
        logged = caplog.text + " ".join(str(getattr(r, "fields", "")) for r in warnings)
        assert "app-secret-5e1f" not in logged and "token=" not in logged
        assert f"http://127.0.0.1:{port}/hook?…" in logged
    finally:
        rt.close()


def test_https_to_a_pinned_address_keeps_the_urls_name_for_sni_and_the_certificate(
    tmp_path: Any,
) -> None:
    import ipaddress
    import shutil
    import ssl
    import subprocess
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pixverse_tracker.rules.addresses import AddressPolicy
    from pixverse_tracker.service import outbound

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    name = "hooks.example.test"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server_names: list[str | None] = []
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hosts.append(self.headers["Host"])
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    server_side.sni_callback = lambda _sock, sni, _ctx: server_names.append(sni)  # type: ignore[assignment,func-returns-value]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_side.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        attempt = outbound.post(
            f"https://{name}:{port}/hooks",
            b"{}",
            {"Content-Type": "application/json"},
            AddressPolicy(allow_private=True),
            5.0,
            resolve=lambda host, p: [ipaddress.ip_address("127.0.0.1")],
            tls=trusting,
        )
        assert attempt == outbound.Attempt(True, 204, None)
        assert server_names == [name] and hosts == [f"{name}:{port}"]
        # the same address under a name the certificate does not carry is refused
        other = outbound.post(
            f"https://other.example.test:{port}/hooks", b"{}", {}, AddressPolicy(allow_private=True),
            5.0, resolve=lambda host, p: [ipaddress.ip_address("127.0.0.1")], tls=trusting,
        )  # fmt: skip
        assert not other.ok and other.error is not None
        assert other.error.startswith("TLS certificate not accepted")
    finally:
        server.shutdown()
        server.server_close()


def test_a_path_and_query_beyond_ascii_arrive_percent_encoded() -> None:
    from pixverse_tracker.rules.addresses import AddressPolicy
    from pixverse_tracker.service import outbound

    receiver = Receiver([])
    try:
        url = f"http://127.0.0.1:{receiver.port}/hooks/vidéo?name=ñ&x=%41"
        attempt = outbound.post(url, b"{}", {}, AddressPolicy(allow_private=True), 5.0)
        assert attempt.ok, attempt
        assert receiver.paths == ["/hooks/vid%C3%A9o?name=%C3%B1&x=%41"]
    finally:
        receiver.close()


def test_a_stored_delivery_to_a_forbidden_address_fails_at_once_without_a_connection(
    pg: sessionmaker[Session], pg_database: str, simulator: Simulator
) -> None:
    receiver = Receiver([])
    rt = _runtime(pg_database, simulator)
    try:
        _finished_with_webhook(rt, receiver.url, 29)
        with rt.sessions.begin() as session:  # as stored before addresses were checked
            session.execute(
                text("UPDATE webhook_outbox SET url = 'http://169.254.169.254/latest/meta-data/'")
            )
        assert sender.deliver_due(rt) == 0
        (row,) = _outbox(rt)
        assert row["failed_at"] is not None and row["attempts"] == 1
        assert row["last_error"] == (
            "refused: 169.254.169.254 is a cloud metadata address, which is never allowed"
        )
        assert receiver.received == []
    finally:
        rt.close()
        receiver.close()

"""Integration tests for pixverse_tracker.upstream.transport against a deliberately misbehaving server on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pixverse_tracker.rules.outcomes import Deleted, NotYet, Record, Transient
from pixverse_tracker.upstream.transport import UseapiClient
from pixverse_tracker.upstream.urls import VIDEOS_PATH

TOKEN = "tok-NETWORK-SECRET-4b1d"
MB = 1024 * 1024
HUGE = 50 * MB
CHUNK = b"x" * 65536


@dataclass
class ServerState:
    """What the server saw and did, for assertions made after the client returned."""

    requested: list[str] = field(default_factory=list)
    authorization: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_sent(self, name: str, count: int) -> None:
        with self.lock:
            self.sent[name] = count

    def wait_for_sent(self, name: str, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if name in self.sent:
                    return self.sent[name]
            time.sleep(0.01)
        raise AssertionError(f"server never finished {name!r}")


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    state: ServerState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Broken pipes and resets are the point of these tests, not noise worth a traceback.
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: QuietServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.removeprefix(VIDEOS_PATH)
        state = self.server.state
        with state.lock:
            state.requested.append(name)
            state.authorization.append(self.headers.get("Authorization", ""))
        # The id in the path picks the misbehaviour.
        action: Callable[[str], None] = getattr(self, "_" + name.replace("-", "_"), self._unknown)
        self.connection.settimeout(10)
        action(name)

    # -- helpers ------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _reset_connection(self) -> None:
        # SO_LINGER 0 makes close() send an RST instead of a polite FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _stream_filler(self, name: str, *, chunked: bool) -> None:
        sent = 0
        try:
            while sent < HUGE:
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                else:
                    self.wfile.write(CHUNK)
                sent += len(CHUNK)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            self.server.state.record_sent(name, sent)

    # -- behaviours ---------------------------------------------------------------------------

    def _unknown(self, name: str) -> None:
        self._send(404, json.dumps({"error": "no such behaviour"}).encode())

    def _ok(self, name: str) -> None:
        self._send(200, json.dumps({"video_id": name, "video_status": 1}).encode())

    def _gzip(self, name: str) -> None:
        body = gzip.compress(json.dumps({"video_id": name, "prompt": "p" * 5000}).encode())
        self._send(200, body, {"Content-Encoding": "gzip"})

    def _deleted(self, name: str) -> None:
        self._send(404, json.dumps({"error": "The original video has been deleted"}).encode())

    def _not_yet(self, name: str) -> None:
        message = "The video was deleted, not found, or is still processing."
        self._send(404, json.dumps({"error": message, "code": 404}).encode())

    def _late_drip(self, name: str) -> None:
        # Headers late, then a byte just inside every read timeout: only an overall deadline
        # that counts from the request's start ends this on time.
        time.sleep(0.9)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            for _ in range(20):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.9)
        except OSError:
            self.close_connection = True

    def _slow(self, name: str) -> None:
        time.sleep(2.0)
        try:
            self._ok(name)
        except OSError:
            self.close_connection = True

    def _reset(self, name: str) -> None:
        self._reset_connection()

    def _reset_mid_body(self, name: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b'{"video_id": ')
        time.sleep(0.2)
        self._reset_connection()

    def _big_close_delimited(self, name: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self._stream_filler(name, chunked=False)

    def _big_chunked(self, name: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._stream_filler(name, chunked=True)

    def _big_declared(self, name: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(HUGE))
        self.end_headers()
        self._stream_filler(name, chunked=False)

    def _drip(self, name: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        sent = 0
        started = time.monotonic()
        try:
            while time.monotonic() - started < 10:
                self.wfile.write(b" ")
                sent += 1
                time.sleep(0.02)
        except OSError:
            self.close_connection = True
        finally:
            self.server.state.record_sent(name, sent)

    def _redirect(self, name: str) -> None:
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)
        self.send_response(302)
        self.send_header("Location", f"http://{host}:{port}{VIDEOS_PATH}elsewhere")
        self.send_header("Content-Length", str(HUGE))
        self.end_headers()
        self._stream_filler(name, chunked=False)


@pytest.fixture(scope="module")
def server() -> Iterator[QuietServer]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, name="fake-useapi", daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def client(server: QuietServer) -> Iterator[UseapiClient]:
    host, port = server.server_address[:2]
    assert isinstance(host, str)
    with UseapiClient(
        f"http://{host}:{port}", TOKEN, connect_timeout=0.5, read_timeout=0.3
    ) as instance:
        yield instance


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_well_formed_record_arrives_with_the_bearer_token(
    client: UseapiClient, server: QuietServer
) -> None:
    outcome = client.fetch("ok")
    assert isinstance(outcome, Record)
    assert outcome.record == {"video_id": "ok", "video_status": 1}
    assert f"Bearer {TOKEN}" in server.state.authorization


def test_a_gzip_encoded_record_is_decoded(client: UseapiClient) -> None:
    outcome = client.fetch("gzip")
    assert isinstance(outcome, Record)
    assert outcome.record["prompt"] == "p" * 5000


def test_deleted_and_generic_404s_are_told_apart_over_the_wire(client: UseapiClient) -> None:
    assert isinstance(client.fetch("deleted"), Deleted)
    assert isinstance(client.fetch("not-yet"), NotYet)


def test_a_server_slower_than_the_read_timeout_is_transient_fast(client: UseapiClient) -> None:
    outcome, elapsed = timed(lambda: client.fetch("slow"))
    assert isinstance(outcome, Transient)
    assert outcome.reason == "read timeout"
    assert outcome.http_status is None
    assert elapsed < 1.5
    assert 0.25 <= outcome.latency < 1.5


def test_a_connection_reset_before_any_answer_is_transient(client: UseapiClient) -> None:
    outcome = client.fetch("reset")
    assert isinstance(outcome, Transient)
    assert outcome.reason in ("connection reset", "connection error")
    assert outcome.http_status is None


def test_a_connection_reset_in_the_middle_of_the_body_is_transient(client: UseapiClient) -> None:
    outcome = client.fetch("reset-mid-body")
    assert isinstance(outcome, Transient)
    assert outcome.reason.startswith("connection")
    assert outcome.reason.endswith("while reading the body")
    assert outcome.http_status == 200


def test_a_refused_connection_is_transient() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with UseapiClient(f"http://127.0.0.1:{port}", TOKEN, connect_timeout=1.0) as closed_port:
        outcome, elapsed = timed(lambda: closed_port.fetch("ok"))
    assert isinstance(outcome, Transient)
    assert outcome.reason == "connection refused"
    assert outcome.http_status is None
    assert elapsed < 1.0


@pytest.mark.parametrize("behaviour", ["big-close-delimited", "big-chunked", "big-declared"])
def test_a_50_mb_body_is_transient_without_being_read(
    client: UseapiClient, server: QuietServer, behaviour: str
) -> None:
    outcome, elapsed = timed(lambda: client.fetch(behaviour))
    assert isinstance(outcome, Transient)
    assert "body too large" in outcome.reason
    assert outcome.http_status == 200
    assert elapsed < 5.0
    # The client hung up early, so the server's writes failed long before 50 MB went out.
    assert server.state.wait_for_sent(behaviour) < HUGE


def test_a_slow_drip_body_is_cut_off_at_the_deadline(
    client: UseapiClient, server: QuietServer
) -> None:
    outcome, elapsed = timed(lambda: client.fetch("drip"))
    assert isinstance(outcome, Transient)
    assert "deadline" in outcome.reason
    # The deadline is connect + read timeout (0.8 s), plus at most one more read.
    assert elapsed < 2.0
    assert server.state.wait_for_sent("drip") < 100_000


def test_a_whole_request_ends_within_connect_plus_read_timeout_from_its_start(
    server: QuietServer,
) -> None:
    # A claimed id's lease covers one request of this length (Settings.request_budget).
    host, port = server.server_address[:2]
    with UseapiClient(
        f"http://{host}:{port}", TOKEN, connect_timeout=0.5, read_timeout=1.0
    ) as slow_reader:
        outcome, elapsed = timed(lambda: slow_reader.fetch("late-drip"))
    assert isinstance(outcome, Transient)
    assert "deadline" in outcome.reason
    # 1.5 s from the start; counted from the headers (0.9 s in) plus one more read it was ~3 s
    assert elapsed < 2.2


def test_a_redirect_is_neither_followed_nor_read(client: UseapiClient, server: QuietServer) -> None:
    outcome, elapsed = timed(lambda: client.fetch("redirect"))
    assert isinstance(outcome, Transient)
    assert outcome.http_status == 302
    assert elapsed < 5.0
    assert "elsewhere" not in server.state.requested
    assert server.state.wait_for_sent("redirect") < HUGE

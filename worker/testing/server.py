"""The simulator's HTTP server: HTTP/1.1 on loopback, a thread per connection, each request's
answer from the fake upstream, waited for as its latency says, cut off when the client goes."""

from __future__ import annotations

import select
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pixverse_tracker.testing.responders import Answer
from pixverse_tracker.testing.upstream import CLIENT_CLOSED, FakeUpstream


class SimServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], simulator: FakeUpstream, *, nodelay: bool = False
    ) -> None:
        self.simulator = simulator
        self.nodelay = nodelay  # TCP_NODELAY on every connection (Simulator's tcp_nodelay)
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

    def _server(self) -> SimServer:
        server = self.server
        if not isinstance(server, SimServer):
            raise TypeError("handler used outside the simulator's server")
        return server

    def setup(self) -> None:
        super().setup()
        if self._server().nodelay:
            # What socketserver's disable_nagle_algorithm does, for this server's connections
            # only (that switch is per class, so per process).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self._server().simulator.track_connection(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server().simulator.track_connection(self.connection, False)

    def do_GET(self) -> None:
        self._discard_body()
        server = self._server()
        call = server.simulator.arrive(self.path, self.headers.get("Authorization"))
        cut_off, gone = True, False
        try:
            cut_off, gone = self._wait(call.delay)
        finally:
            # Logged before the bytes go out: once a client holds the answer, the log shows it,
            # and a next poll sent straight after it is not miscounted as an overlap.
            server.simulator.depart(
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

    def _send(self, answer: Answer) -> None:
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

"""The receiver's built-in server (``pixverse-tracker push-receiver``, no extra package): wsgiref
with a thread per connection, a connection cap, and header and body deadlines that a client
dripping one byte at a time cannot stretch."""

from __future__ import annotations

import errno
import io
import logging
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from pixverse_tracker import logs
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.web import connection_limits
from pixverse_tracker.web.connection_limits import ConnectionLimits
from pixverse_tracker.web.receiver import log, make_app
from pixverse_tracker.web.receiver_config import ReceiverConfig

# Socket timeout while answering: answers are small, so a client that reads nothing for this
# long is gone or hostile.
WRITE_TIMEOUT = 10.0

READ_BUFFER = 8192

# errno values of an accept() that failed for lack of resources, not because of the client.
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _DevServer(ThreadingMixIn, WSGIServer):
    """wsgiref with a thread per connection, at most ``max_connections`` of them at once."""

    daemon_threads = True
    request_queue_size = connection_limits.LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], limits: ConnectionLimits) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._closing = threading.Event()
        super().__init__(address, _QuietHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        # At the cap, accept nothing: new connections wait in the listen queue, as with
        # waitress, rather than each taking a thread and a descriptor.
        while not self._slots.acquire(timeout=0.5):
            if self._closing.is_set():
                raise OSError("the server is shutting down")
        try:
            return super().get_request()
        except OSError as exc:
            self._slots.release()
            if exc.errno in _OUT_OF_RESOURCES:
                # The listening socket stays readable: retrying at once would spin a core.
                self._closing.wait(0.1)
            raise

    def shutdown_request(self, request: Any) -> None:
        # socketserver calls this exactly once for every accepted connection.
        try:
            super().shutdown_request(request)
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        self._closing.set()
        super().shutdown()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished is routine on the internet: no traceback for it on stderr.
        if isinstance(sys.exc_info()[1], OSError):
            return
        extra = {"action": "push", "fields": {"outcome": "bug"}}
        log.error("push", exc_info=True, extra=extra)


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side that gives up at a fixed time, however the bytes trickle in.

    A socket timeout starts again with every byte, so a client sending one byte a second would
    never reach it; the deadline does not move.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = deadline  # time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(WRITE_TIMEOUT)


class _QuietHandler(WSGIRequestHandler):
    server: _DevServer
    timeout = WRITE_TIMEOUT  # reads are bounded by the _DeadlineReader

    def setup(self) -> None:
        super().setup()
        # The header deadline counts from the accept: one request per connection here.
        self._reader = _DeadlineReader(
            self.connection, connection_limits.deadline(self.server.limits, time.monotonic(), None)
        )
        self.rfile.close()  # the plain socket reader setup() made; it would pin the socket
        self.rfile = io.BufferedReader(self._reader, READ_BUFFER)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        now = time.monotonic()
        self._reader.deadline = connection_limits.deadline(self.server.limits, now, now)
        return parsed

    def handle(self) -> None:
        try:
            super().handle()
        except TimeoutError:
            # Only a request line or headers get here (the app answers a late body with 408).
            # DEBUG: slow clients are common and would flood the log at INFO.
            logs.event(log, logging.DEBUG, "push", outcome="header_timeout")

    def log_message(self, format: str, *args: Any) -> None:
        # wsgiref's access line would print the path, secret included; the app logs its own
        # line with the secret masked.
        return


def make_dev_server(host: str, port: int, rt: Runtime, config: ReceiverConfig) -> WSGIServer:
    """A threaded wsgiref server bound to ``host:port`` (0: any free port), not yet serving.

    It applies ``config.limits``: the connection cap and the header and body deadlines.
    """
    server = _DevServer((host, port), config.limits)
    server.set_app(make_app(rt, config))
    return server

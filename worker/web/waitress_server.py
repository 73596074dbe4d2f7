"""The receiver on waitress, with the whole-request deadlines waitress lacks on its own.

waitress suits untrusted clients: one thread reads every connection without blocking and hands
a request to the application's threads only once it has arrived whole, so slow clients cost a
buffer each, not a thread. Its own timeout (``channel_timeout``) is about idleness, though,
and restarts with every byte: a client sending one byte every two seconds would keep its
connection forever. The channel below remembers when its request began and when its headers
were complete, and the server's periodic sweep closes any connection whose request missed
``connection_limits.deadline``. Needs the ``server`` extra (``pip install
'pixverse-tracker[server]'``); ``pixverse-tracker push-receiver --server waitress`` runs it.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any
from wsgiref.types import WSGIApplication

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, TcpWSGIServer

from pixverse_tracker import logs
from pixverse_tracker.web import connection_limits
from pixverse_tracker.web.connection_limits import ConnectionLimits

log = logging.getLogger("tracker.push")

THREADS = 4  # application threads: each push is one short transaction
# How often the deadlines are checked: a late connection lives at most this much longer.
SWEEP_SECONDS = 1
MAX_HEADER_BYTES = 65_536  # as the built-in server's request line; waitress allows 256 KiB
# waitress counts its listening socket and its wake-up pipe among the connections.
_OWN_SOCKETS = 2


class _DeadlineChannel(HTTPChannel):
    """A connection that knows when the request it is receiving began and finished its headers."""

    def __init__(
        self,
        server: BaseWSGIServer,
        sock: socket.socket,
        addr: Any,
        adj: Adjustments,
        map: dict[int, Any] | None = None,
    ) -> None:
        # Before the base class registers the channel with the loop that sweeps it.
        self.request_started = time.monotonic()  # the first request's clock starts at accept
        self.headers_done: float | None = None
        self.served = False  # a request was handed on; the connection may idle till the next
        super().__init__(server, sock, addr, adj, map=map)

    def received(self, data: bytes) -> bool:
        now = time.monotonic()
        if self.request is None and self.served:
            self.request_started = now  # a kept-alive connection begins its next request
        taken = super().received(data)
        if self.request is None:
            self.served, self.headers_done = True, None
        elif self.request.headers_finished and self.headers_done is None:
            self.headers_done = now
        return taken

    def overdue(self, limits: ConnectionLimits, now: float) -> bool:
        """Whether the request being received missed its deadline."""
        # Waiting for the application, or idle between requests, is not receiving: waitress's
        # channel_timeout covers the idle connections.
        if self.requests or (self.request is None and self.served):
            return False
        return now > connection_limits.deadline(limits, self.request_started, self.headers_done)


class DeadlineServer(TcpWSGIServer):
    """waitress's TCP server, closing connections whose request arrives too slowly."""

    channel_class = _DeadlineChannel
    limits = ConnectionLimits()

    def address(self) -> tuple[str, int]:
        """The host and port listened on (the real port when 0 was asked for)."""
        assert self.socket is not None, "the server socket is created in __init__"
        bound = self.socket.getsockname()
        return str(bound[0]), int(bound[1])

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # type: ignore[arg-type]  # the stubs say int; it is time.time()
        clock = time.monotonic()
        channels: dict[int, _DeadlineChannel] = self.active_channels  # type: ignore[assignment]
        for channel in list(channels.values()):
            if not channel.will_close and channel.overdue(self.limits, clock):
                phase = "header" if channel.headers_done is None else "body"
                logs.event(log, logging.DEBUG, "push", outcome=f"{phase}_timeout")
                channel.will_close = True  # the loop closes it on its next turn


def make_server(
    host: str, port: int, app: WSGIApplication, limits: ConnectionLimits, max_body_bytes: int
) -> DeadlineServer:
    """A waitress server bound to ``host:port`` (0: any free port) with ``limits``; ``run()``."""
    adj = Adjustments(
        host=host,
        port=port,
        threads=THREADS,
        connection_limit=limits.max_connections + _OWN_SOCKETS,
        # Idle connections (before a first byte, between kept-alive requests) get as long as
        # a request's headers do.
        channel_timeout=limits.header_timeout,
        cleanup_interval=SWEEP_SECONDS,
        max_request_header_size=MAX_HEADER_BYTES,
        max_request_body_size=max_body_bytes,
        backlog=connection_limits.LISTEN_BACKLOG,
        # select() cannot watch descriptors past 1023; poll() can.
        asyncore_use_poll=True,
        # Resets and timeouts from clients are routine; logging each with a traceback would
        # let any client fill the log.
        log_socket_errors=False,
    )
    server = DeadlineServer(app, adj=adj)
    server.limits = limits
    return server

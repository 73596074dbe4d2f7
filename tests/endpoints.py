"""Application endpoints on loopback for the webhook tests: a well-behaved one and a slow drip."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """An application endpoint that records what it got; answers from a script of statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                receiver.paths.append(self.path)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Visit:
    """One request to the drip endpoint: its webhook-id and when it started and ended."""

    key: str
    started: float
    ended: float | None = None


class DripEndpoint:
    """The attack of issue 11: reads the request, then answers one byte every ``gap`` seconds
    (an endless header line), so no per-read timeout ever fires. Stops when the client hangs
    up, or after ``limit`` seconds."""

    def __init__(self, gap: float = 2.0, limit: float = 120.0) -> None:
        self.visits: list[Visit] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                key = ""
                for line in head.split(b"\r\n"):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() in {"webhook-id", "idempotency-key"}:
                        key = value.strip()
                visit = Visit(key, time.monotonic())
                with endpoint.lock:
                    endpoint.visits.append(visit)
                drip = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 100_000
                try:
                    for i in range(len(drip)):
                        sock.sendall(drip[i : i + 1])
                        if time.monotonic() - visit.started > endpoint.limit:
                            break
                        # Sending fails only after the peer's close is noticed: look for it
                        if _peer_closed(sock, endpoint.gap):
                            break
                except OSError:
                    pass
                visit.ended = time.monotonic()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.gap = gap
        self.limit = limit
        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _peer_closed(sock: socket.socket, wait: float) -> bool:
    """Wait ``wait`` seconds; True as soon as the peer hangs up."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(None)

"""Slow clients (slowloris) against the replyUrl receiver, run as the real server processes.

Two receivers: the command docker-compose runs (read from docker-compose.yml, bound to
loopback) and the built-in server (`pixverse-tracker push-receiver`, no extra package). Each runs
with its production defaults: 1,000 connections, headers within 10 s, bodies within 20 s.
"""

from __future__ import annotations

import os
import re
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pixverse_tracker.testing import CLI, base_env
from pixverse_tracker.web.connection_limits import RESERVED_FILES, ConnectionLimits
from tests.e2e.conftest import TOKEN, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SECRET = "slow-clients-secret-0123456789"
DEFAULTS = ConnectionLimits()
SLOW = 500
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the receiver processes -----------------------------------------------------------------------


def _compose_receiver() -> tuple[list[str], dict[str, str]]:
    """docker-compose's receiver command and its TRACKER_PUSH_* settings, on loopback."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["push-receiver"]
    port_and_host = {"0.0.0.0": "127.0.0.1", "8081": "{port}", "0.0.0.0:8081": "127.0.0.1:{port}"}
    argv = [port_and_host.get(str(arg), str(arg)) for arg in service["command"]]
    # ${NAME:-default}, as docker-compose fills it in when NAME is unset
    settings = {
        name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        for name, value in service["environment"].items()
        if name.startswith("TRACKER_PUSH_") and name != "TRACKER_PUSH_SECRET"
    }
    return argv, settings


@dataclass
class Receiver:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def connections(self) -> int:
        """Client connections the server process has accepted and holds open now."""
        inodes = set()
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            with suppress(OSError):
                if (target := os.readlink(fd)).startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        held = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                # state 01 is ESTABLISHED; connections still in the listen queue have no inode
                held += local_port == self.port and fields[3] == "01" and fields[9] in inodes
        return held

    def cpu_seconds(self) -> float:
        raw = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def running(
    kind: str, database_url: str, log_dir: Path, files: int | None = None
) -> Iterator[Receiver]:
    """The receiver ``kind`` ("compose" or "builtin") serving on a free loopback port."""
    port = free_port()
    if kind == "compose":
        template, settings = _compose_receiver()
    else:
        template, settings = [CLI, "push-receiver", "--host", "127.0.0.1", "--port", "{port}"], {}
    argv = [arg.format(port=port) for arg in template]
    env = base_env(
        DATABASE_URL=database_url.replace("postgresql+psycopg2://", "postgresql://"),
        USEAPI_TOKEN=TOKEN,
        TRACKER_PUSH_SECRET=SECRET,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **settings,
    )

    def limit_files() -> None:
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    log_path = log_dir / f"receiver-{kind}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limit_files,
        )
    receiver = Receiver(process, port, log_path)
    try:
        assert wait_until(lambda: healthz(port, 2.0) == 200, 60, 0.2), receiver.logs()
        yield receiver
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(params=["compose", "builtin"])
def receiver(
    request: pytest.FixtureRequest, pg_database: str, tmp_path: Path
) -> Iterator[Receiver]:
    with running(request.param, pg_database, tmp_path) as started:
        yield started


# --- clients --------------------------------------------------------------------------------------


def healthz(port: int, deadline: float) -> int | None:
    """The status of ``GET /healthz`` if its whole answer came within ``deadline`` seconds."""
    end = time.monotonic() + deadline
    answer = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            while (left := end - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            else:
                return None
    except OSError:
        return None
    head = answer.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) > 1 and answer.endswith(b"ok") else None


def open_slow(port: int, kind: str) -> socket.socket:
    """A connection that sent a request line and part of its headers, or headers and no body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if kind == "header":
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
    else:
        sock.sendall(
            f"POST /callbacks/{SECRET} HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json"
            "\r\nContent-Length: 100000\r\n\r\n".encode()
        )
    sock.setblocking(False)
    return sock


def drip(sockets: list[socket.socket]) -> None:
    """One more byte on each connection: an idle timer starts again, a deadline does not."""
    for sock in sockets:
        with suppress(OSError):
            sock.send(b"x")


@contextmanager
def files_for(connections: int) -> Iterator[None]:
    """Enough open files in this process for ``connections`` sockets, restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"this test needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


# --- the tests ------------------------------------------------------------------------------------


def test_healthz_answers_within_a_second_while_500_slow_clients_hold_connections(
    receiver: Receiver,
) -> None:
    with files_for(SLOW):
        slow = [open_slow(receiver.port, "header" if i % 2 else "body") for i in range(SLOW)]
        try:
            # The server really holds them all: the attack is on.
            held = wait_until(lambda: receiver.connections() >= SLOW, 10, 0.1)
            assert held, f"the server took {receiver.connections()}\n{receiver.logs()}"
            answers = []
            for _ in range(8):
                drip(slow)
                answers.append(healthz(receiver.port, 1.0))
                time.sleep(0.25)
        finally:
            close_all(slow)
    assert answers == [200] * 8, receiver.logs()


def _watch_until_closed(
    clients: dict[str, socket.socket], give_up: float
) -> dict[str, tuple[float, bytes]]:
    """Drip a byte a second on each client until the server closes it: when, and what it said."""
    closed: dict[str, tuple[float, bytes]] = {}
    received = {name: b"" for name in clients}
    next_drip = time.monotonic()
    while len(closed) < len(clients) and time.monotonic() < give_up:
        now = time.monotonic()
        if now >= next_drip:
            drip([sock for name, sock in clients.items() if name not in closed])
            next_drip = now + 1.0
        open_ones = {sock: name for name, sock in clients.items() if name not in closed}
        readable, _, _ = select.select(list(open_ones), [], [], 0.1)
        for sock in readable:
            name = open_ones[sock]
            try:
                chunk = sock.recv(4096)
            except OSError:  # reset: closed as well
                chunk = b""
            if chunk:
                received[name] += chunk
            else:
                closed[name] = (time.monotonic(), received[name])
    return closed


def test_a_request_trickling_in_a_byte_a_second_is_cut_off_at_its_deadline(
    receiver: Receiver,
) -> None:
    started = time.monotonic()
    clients = {
        "header": open_slow(receiver.port, "header"),
        "body": open_slow(receiver.port, "body"),
    }
    try:
        closed = _watch_until_closed(clients, started + DEFAULTS.body_timeout + 15)
    finally:
        close_all(list(clients.values()))

    assert set(closed) == {"header", "body"}, f"still open: {set(clients) - set(closed)}"
    # Each is closed at its deadline (plus the server's once-a-second sweep and a loaded
    # machine's slack), not before: a client that is merely slow keeps its full time.
    limits = {"header": DEFAULTS.header_timeout, "body": DEFAULTS.body_timeout}
    for name, (when, answer) in closed.items():
        lasted = when - started
        assert limits[name] - 1 <= lasted <= limits[name] + 5, (name, lasted)
        # closed without an answer, or with 408 (the built-in server's app reads the body)
        assert answer == b"" or answer.split(b"\r\n", 1)[0].endswith(b"408 Request Timeout")


@pytest.mark.parametrize("kind", ["compose", "builtin"])
def test_a_receiver_short_of_file_descriptors_lowers_its_cap_instead_of_spinning(
    kind: str, pg_database: str, tmp_path: Path
) -> None:
    files = 200
    cap = files - RESERVED_FILES
    with running(kind, pg_database, tmp_path, files=files) as receiver:
        assert f"accepting at most {cap} connections" in receiver.logs()
        with files_for(300):
            slow = [open_slow(receiver.port, "header") for _ in range(300)]
            try:
                at_cap = wait_until(lambda: receiver.connections() >= cap, 10, 0.1)
                assert at_cap, receiver.connections()
                before = receiver.cpu_seconds()
                time.sleep(3)
                spent = receiver.cpu_seconds() - before
                held = receiver.connections()
            finally:
                close_all(slow)
        # Not a performance figure: an accept loop that spins on EMFILE burns the whole 3 s,
        # a server waiting at its cap next to nothing.
        assert spent < 1.0, f"{spent:.2f} CPU seconds in 3 s\n{receiver.logs()[-3000:]}"
        assert held == cap  # the other connections wait in the listen queue
        assert wait_until(lambda: healthz(receiver.port, 1.0) == 200, 20, 0.2), receiver.logs()

"""Slow clients against the replyUrl receiver: does ``/healthz`` still answer, and at what cost?

What it measures. A slowloris attack holds a server's connections open by sending a request
very slowly: the request line, then one header byte every few seconds (``--slow-headers``), or
complete headers announcing a body that then arrives one byte every few seconds
(``--slow-bodies``). Each slow client that the server closes is replaced at once by a new one,
as an attacker would do, so the number of slow connections stays at what was asked for.

For each server named with ``--server`` the benchmark starts the receiver as its own process on
loopback (a throwaway database behind it), opens the slow clients, waits ``--settle`` seconds,
then for ``--seconds`` sends ``GET /healthz`` every ``--probe-interval`` seconds on a new
connection, each given ``--probe-timeout`` seconds.

Servers (``--server``, repeatable; ``all`` for every one):

- ``builtin``: ``pixverse-tracker push-receiver`` (the standard library server, with its limits);
- ``waitress``: ``pixverse-tracker push-receiver --server waitress`` (what docker-compose runs);
- ``waitress-serve``: plain ``waitress-serve`` with the same connection cap, no deadlines;
- ``gunicorn-sync``: ``gunicorn -w 2``;
- ``gunicorn-gthread``: ``gunicorn -w 2 -k gthread --threads 8``.

Reading the output. One row per server: ``/healthz answered`` (answered/sent and the share),
the probes' latency p50 / p95 / max in ms, the server's CPU (all its processes, % of one core)
and RSS, the sockets it holds, the slow connections open at the end and the age of the oldest,
and how many slow connections it closed and the longest any lasted. Good is 100% answered at
a few ms with the slow connections closed at the receiver's header and body deadlines (10 s
and 20 s by default: ``longest s`` near those) and the sockets bounded by its connection cap;
a server that holds every slow connection for as long as it drips, or answers 0%, can be taken
offline (gunicorn's sync and gthread workers are there as that contrast).

Run: ``.venv/bin/python -m bench.slowclients --server builtin --server waitress`` (about a
minute per server). The slow bodies are sent to ``/callbacks/<secret>``, the worst case: an
attacker who knows the secret. Prints figures; never asserts on a time.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import secrets
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import common

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
WAITRESS_SERVE = str(Path(sys.executable).with_name("waitress-serve"))
APP = "pixverse_tracker.web.receiver:application"

SERVERS: dict[str, list[str]] = {
    "builtin": [common.CLI, "push-receiver", "--host", "{host}", "--port", "{port}"],
    "waitress": [
        common.CLI, "push-receiver", "--server", "waitress", "--host", "{host}", "--port", "{port}",
    ],
    "waitress-serve": [
        WAITRESS_SERVE, "--listen={host}:{port}", "--connection-limit=1000",
        "--asyncore-use-poll", APP,
    ],
    "gunicorn-sync": [GUNICORN, "--workers", "2", "--bind", "{host}:{port}", APP],
    "gunicorn-gthread": [
        GUNICORN, "--workers", "2", "--worker-class", "gthread", "--threads", "8",
        "--bind", "{host}:{port}", APP,
    ],
}  # fmt: skip

HEADER_DRIP = b"X-Slow: a\r\n"  # one byte of this at a time, forever
BODY_LENGTH = 100_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.slowclients",
        description=(
            "Slowloris against the replyUrl receiver: slow-header and slow-body clients, "
            "then /healthz probes. Prints the answer rate, latency and server CPU per server; "
            "never fails on a time."
        ),
    )
    parser.add_argument(
        "--server",
        action="append",
        choices=[*SERVERS, "all"],
        help="server to measure (repeatable; default builtin and waitress)",
    )
    parser.add_argument("--slow-headers", type=int, default=500, help="slow-header clients")
    parser.add_argument("--slow-bodies", type=int, default=0, help="slow-body clients")
    parser.add_argument(
        "--drip", type=float, default=2.0, help="seconds between two bytes of a slow client"
    )
    parser.add_argument(
        "--ramp", type=float, default=200.0, help="new slow connections per second at most"
    )
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before probing")
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds of probing")
    parser.add_argument("--probe-interval", type=float, default=0.2)
    parser.add_argument("--probe-timeout", type=float, default=2.0)
    parser.add_argument(
        "--server-nofile",
        type=int,
        default=None,
        help="the server's soft limit on open files (default: inherited, raised to the hard limit)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' output")
    args = parser.parse_args(argv)
    chosen = args.server or ["builtin", "waitress"]
    args.servers = list(SERVERS) if "all" in chosen else list(dict.fromkeys(chosen))
    return args


# --- the slow clients ----------------------------------------------------------------------------


@dataclass
class _Slow:
    sock: socket.socket
    opened: float
    first: bytes  # sent as soon as the connection is up
    drip: bytes  # then one byte of this (cyclically) per drip interval
    sent_first: bool = False
    position: int = 0
    next_drip: float = 0.0


@dataclass
class SlowClients:
    """Keeps ``headers + bodies`` slow connections open in one thread, reopening closed ones."""

    address: tuple[str, int]
    headers: int
    bodies: int
    drip: float
    body_path: str
    ramp: float  # new connections per second at most, so that a short listen queue keeps up
    lifetimes: list[float] = field(default_factory=list)  # of connections the server closed
    failed_connects: int = 0
    _open: dict[int, _Slow] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def held(self) -> int:
        """Slow connections open now (the handshake done)."""
        return sum(1 for s in list(self._open.values()) if s.sent_first)

    def oldest(self) -> float:
        now = time.monotonic()
        return max((now - s.opened for s in list(self._open.values()) if s.sent_first), default=0)

    def _new(self, kind: str, now: float) -> _Slow | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed_connects += 1
            return None
        if kind == "header":
            first, drip = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n", HEADER_DRIP
        else:
            first = (
                f"POST {self.body_path} HTTP/1.1\r\nHost: bench\r\n"
                f"Content-Type: application/json\r\nContent-Length: {BODY_LENGTH}\r\n\r\n"
            ).encode()
            drip = b" "
        return _Slow(sock, now, first, drip, next_drip=now + self.drip)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        kinds = ["header"] * self.headers + ["body"] * self.bodies
        slots: dict[int, str] = dict(enumerate(kinds))  # slot -> kind; reopened on close
        by_slot: dict[int, _Slow] = {}
        allowance, last = 1.0, time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                allowance = min(self.ramp, allowance + (now - last) * self.ramp)
                last = now
                for slot, kind in slots.items():
                    if allowance < 1:
                        break
                    if slot not in by_slot and (slow := self._new(kind, now)) is not None:
                        allowance -= 1
                        by_slot[slot] = slow
                        self._open[slot] = slow
                        selector.register(slow.sock, selectors.EVENT_WRITE, slot)
                for key, _ in selector.select(timeout=0.05):
                    slot = key.data
                    slow = by_slot[slot]
                    if not slow.sent_first:
                        if slow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            self._close(selector, by_slot, slot, count=False)
                            self.failed_connects += 1
                            continue
                        try:
                            slow.sock.send(slow.first)
                        except OSError:
                            self._close(selector, by_slot, slot, count=False)
                            continue
                        slow.sent_first = True
                        slow.opened = now
                        selector.modify(slow.sock, selectors.EVENT_READ, slot)
                        continue
                    # readable: the server answered or closed; either way this client is done
                    self._close(selector, by_slot, slot, count=True)
                for slot, slow in list(by_slot.items()):
                    if slow.sent_first and now >= slow.next_drip:
                        byte = slow.drip[slow.position % len(slow.drip)]
                        slow.position += 1
                        slow.next_drip = now + self.drip
                        try:
                            slow.sock.send(bytes([byte]))
                        except OSError:
                            self._close(selector, by_slot, slot, count=True)
        finally:
            for slot in list(by_slot):
                self._close(selector, by_slot, slot, count=False)
            selector.close()

    def _close(
        self, selector: selectors.BaseSelector, by_slot: dict[int, _Slow], slot: int, count: bool
    ) -> None:
        slow = by_slot.pop(slot)
        self._open.pop(slot, None)
        if count:
            self.lifetimes.append(time.monotonic() - slow.opened)
        selector.unregister(slow.sock)
        slow.sock.close()


# --- the probes ----------------------------------------------------------------------------------


def probe(address: tuple[str, int], timeout: float) -> float | None:
    """Seconds until a whole 200 answer to ``GET /healthz`` arrived; None if it did not in time."""
    started = time.monotonic()
    deadline = started + timeout
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            answer = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return None
    ok = answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) and answer.endswith(b"ok")
    return time.monotonic() - started if ok else None


# --- one server ----------------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    sent: int
    answered: list[float]
    cpu_percent: float
    rss_mib: float
    sockets: int
    held: int
    oldest: float
    closed: int
    longest_closed: float
    failed_connects: int
    exited: bool


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (gunicorn's workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _sockets(pids: Sequence[int]) -> int:
    """Sockets the server's processes hold open: its listening socket(s) and the connections."""
    total = 0
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                total += os.readlink(fd).startswith("socket:")
            except OSError:
                continue
    return total


def _rss_mib(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _wait_for_health(address: tuple[str, int], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if probe(address, 2.0) is not None:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{process.args!r} never answered /healthz")


def _limit_files(soft: int | None) -> None:
    if soft is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def measure(name: str, args: argparse.Namespace, database_url: str) -> Result:
    port = _free_port()
    address = ("127.0.0.1", port)
    argv = [part.format(host=address[0], port=port) for part in SERVERS[name]]
    secret = secrets.token_urlsafe(24)
    env = common.tracker_env(database_url, "bench-slow", "http://127.0.0.1:9")
    env.update(TRACKER_PUSH_SECRET=secret, TRACKER_LOG_LEVEL="WARNING")
    log_path = Path(f"/tmp/bench-slowclients-{name}-{os.getpid()}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=common.REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _limit_files(args.server_nofile),
        )
    slow = SlowClients(
        address, args.slow_headers, args.slow_bodies, args.drip, "/callbacks/" + secret, args.ramp
    )
    try:
        _wait_for_health(address, process)
        slow.start()
        time.sleep(args.settle)
        # gunicorn replaces the workers it kills: the watch counts those born in the window too.
        watch = common.CpuWatch({"server": lambda: _tree(process.pid)})
        watch.start()
        started = time.monotonic()
        answered: list[float] = []
        sent = 0
        while time.monotonic() - started < args.seconds:
            sent += 1
            seconds = probe(address, args.probe_timeout)
            if seconds is not None:
                answered.append(seconds)
            time.sleep(max(0.0, args.probe_interval - (seconds or 0.0)))
        elapsed = time.monotonic() - started
        watch.stop()
        cpu = watch.seconds["server"]
        pids = _tree(process.pid)
        held, oldest = slow.held, slow.oldest()
        rss, sockets = _rss_mib(pids), _sockets(pids)
    finally:
        slow.stop()
        exited = process.poll() is not None
        if not exited:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not args.keep_logs:
            log_path.unlink(missing_ok=True)
        else:
            print(f"  {name}: server output in {log_path}")
    return Result(
        name,
        sent,
        answered,
        100 * cpu / elapsed,
        rss,
        sockets,
        held,
        oldest,
        len(slow.lifetimes),
        max(slow.lifetimes, default=0.0),
        slow.failed_connects,
        exited,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}" if seconds == seconds else "-"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # This process holds every slow connection; the servers inherit the limit unless told.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load_before = os.getloadavg()
    results = []
    with common.migrated_database("bench_slow") as database_url:
        for name in args.servers:
            print(f"measuring {name} ...", flush=True)
            results.append(measure(name, args, database_url))
    print()
    print(
        f"revision {common.git_revision()}; {os.cpu_count()} CPUs; load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after; server files limit "
        f"{args.server_nofile or hard}"
    )
    print(
        f"{args.slow_headers} slow-header and {args.slow_bodies} slow-body clients, one byte "
        f"every {args.drip:g} s, opened at most {args.ramp:g}/s and reopened when closed; "
        f"/healthz every {args.probe_interval:g} s for {args.seconds:g} s after "
        f"{args.settle:g} s, each given {args.probe_timeout:g} s"
    )
    rows = []
    for r in results:
        rate = 100 * len(r.answered) / r.sent if r.sent else 0.0
        rows.append(
            [
                r.server + (" (exited)" if r.exited else ""),
                f"{len(r.answered)}/{r.sent} ({rate:.0f} %)",
                _ms(common.percentile(r.answered, 50)),
                _ms(common.percentile(r.answered, 95)),
                _ms(max(r.answered, default=float("nan"))),
                f"{r.cpu_percent:.0f}",
                f"{r.rss_mib:.0f}",
                str(r.sockets),
                str(r.held),
                f"{r.oldest:.0f}",
                f"{r.closed}",
                f"{r.longest_closed:.1f}",
            ]
        )
    common.print_table(
        [
            "server",
            "/healthz answered",
            "p50 ms",
            "p95 ms",
            "max ms",
            "CPU %",
            "RSS MiB",
            "server sockets",
            "slow open",
            "oldest s",
            "slow closed",
            "longest s",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plumbing shared by the benchmarks: throwaway databases, tracker processes, clocks, counters."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from pixverse_tracker import testing
from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.db.revisions import upgrade
from pixverse_tracker.testing import Processes

REPO = Path(__file__).resolve().parent.parent
CLI = testing.CLI  # the tracker's command, for the benchmarks that start it themselves
TOKEN = "bench-token-3f9a"

# The same servers the test suite uses (trust auth on loopback); overridable like the tests'.
PG_ADMIN_URL = os.environ.get(
    "BENCH_PG_ADMIN_URL",
    os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"),
)
# Database 14, not the tests' 13: a benchmark and a test run may share this machine.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- Postgres ------------------------------------------------------------------------------------


def _admin() -> Engine:
    # pre-ping: the server may have been restarted since the database was created
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """A brand-new Postgres database at the newest schema, dropped afterwards (even on Ctrl-C)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        engine = make_engine(url, pool=False)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def db_clock_offset(engine: Engine) -> float:
    """Database clock minus this process's ``time.time()``, in seconds (about 0 on one host).

    done_at comes from the database's clock and completion times from ours; the offset lets the
    two be subtracted. Bracketing the query halves the round trip's error.
    """
    best: tuple[float, float] | None = None
    with engine.connect() as conn:
        for _ in range(5):
            before = time.time()
            value = conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
            after = time.time()
            candidate = (after - before, float(value) - (before + after) / 2)
            if best is None or candidate[0] < best[0]:
                best = candidate
    assert best is not None
    return best[1]


def pg_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SHOW server_version")).scalar_one())


# --- tracker processes ---------------------------------------------------------------------------
# The harness is the tests' (pixverse_tracker.testing.processes); these pin the benchmarks' token,
# Redis database and working directory.


@contextmanager
def queue_prefix(name: str) -> Iterator[str]:
    """Celery queues of our own on the shared Redis; their keys are deleted afterwards."""
    with testing.queue_prefix(REDIS_URL, f"bench-{name}") as prefix:
        yield prefix


def tracker_env(database_url: str, prefix: str, base_url: str, **settings: str) -> dict[str, str]:
    """The environment of a tracker process: ours minus any tracker settings, plus ``settings``."""
    return testing.tracker_env(
        database_url,
        token=TOKEN,
        base_url=base_url,
        broker_url=REDIS_URL,
        queue_prefix=prefix,
        **settings,
    )


def tracker_processes(env: Mapping[str, str], keep_logs: bool = False) -> Processes:
    """Tracker processes run from the repository (``-m bench.sqlcount`` needs it), their logs in
    a temporary directory removed at ``stop_all`` unless ``keep_logs``."""
    return Processes(env, keep_logs=keep_logs, cwd=REPO, stop_timeout=20)


def start_tracker(
    processes: Processes, command: str, count_statements_to: Path | None = None
) -> subprocess.Popen[bytes]:
    """``pixverse-tracker <command>``; under bench.sqlcount when statements are counted."""
    if count_statements_to is None:
        return processes.start(command)
    argv = [sys.executable, "-m", "bench.sqlcount", str(count_statements_to), command]
    return processes.start_raw(argv, name=command)


# --- CPU -----------------------------------------------------------------------------------------


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads); None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def pids_named(name: str, argument: str | None = None) -> list[int]:
    """Processes whose command line starts with ``name`` (and contains ``argument``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith(name) and (argument is None or argument in cmdline):
            found.append(int(entry.name))
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuWatch:
    """CPU seconds spent between ``start()`` and ``stop()`` by groups of processes and the machine.

    Each group is a function listing its pids, asked at both ends: a process born inside the
    window counts from zero, one that exited inside it takes its CPU with it (pooled connections
    and tracker processes live for the whole window, so that is rare and small).
    """

    groups: dict[str, Callable[[], Sequence[int]]] = field(default_factory=dict)
    started: dict[str, dict[int, float]] = field(default_factory=dict)
    machine_start: tuple[float, float] = (0.0, 0.0)
    seconds: dict[str, float] = field(default_factory=dict)
    machine_busy_seconds: float = 0.0
    machine_total_seconds: float = 0.0

    def start(self) -> None:
        self.started = {
            name: {pid: cpu for pid in pids() if (cpu := process_cpu(pid)) is not None}
            for name, pids in self.groups.items()
        }
        self.machine_start = machine_busy()

    def stop(self) -> None:
        busy, total = machine_busy()
        self.machine_busy_seconds = busy - self.machine_start[0]
        self.machine_total_seconds = total - self.machine_start[1]
        for name, pids in self.groups.items():
            before = self.started.get(name, {})
            spent = 0.0
            for pid in set(pids()) | set(before):
                now = process_cpu(pid)
                if now is not None:
                    spent += now - before.get(pid, 0.0)
            self.seconds[name] = spent

    @property
    def others(self) -> float:
        """CPU seconds of everything outside the groups (other users of this machine)."""
        return max(0.0, self.machine_busy_seconds - sum(self.seconds.values()))


def postgres_backends(database: str) -> Callable[[], list[int]]:
    """The server processes serving connections to ``database``."""
    return lambda: pids_named("postgres: ", f" {database} ")


def postgres_background() -> list[int]:
    """Postgres's own processes: postmaster, WAL writer, checkpointer, autovacuum..."""
    return [
        pid
        for pid in pids_named("/usr/lib/postgresql", None) + pids_named("postgres", None)
        if _is_background(pid)
    ]


def _is_background(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    # client backends show the peer address: "postgres: 15/main: user db 127.0.0.1(5432) idle"
    return "(" not in cmdline and "[local]" not in cmdline


def git_revision() -> str:
    """HEAD and whether the working tree differs: the figures belong to that code."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


# --- numbers -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def max_in_window(times: Sequence[float], width: float) -> int:
    """The most events inside any window of ``width`` seconds (sliding, not fixed buckets)."""
    ordered = sorted(times)
    best = low = 0
    for high, t in enumerate(ordered):
        while ordered[low] <= t - width:
            low += 1
        best = max(best, high - low + 1)
    return best


def machine_summary(engine: Engine) -> str:
    """One line naming what the figures were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"PostgreSQL {pg_version(engine)}"
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = [
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(cells).rstrip())


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file another process rewrites now and then; {} while it does not exist yet."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def run_main(run: Callable[[], int]) -> int:
    """A benchmark's exit: its status, or one line for the failures every benchmark shares."""
    from pixverse_tracker.settings import SettingsError

    try:
        return run()
    except SettingsError as exc:  # e.g. a --speed that compresses a setting below its floor
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a tracker process died: its log tail is in the message
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""Real ``pixverse-tracker`` processes for tests and benchmarks: the environment they get, Celery
queues of their own on a shared Redis, and starting and stopping them with their output in
files::

    from pixverse_tracker.testing import Processes, Simulator, queue_prefix, tracker_env

    with Simulator(token="t") as sim, queue_prefix(REDIS_URL, "mytest") as prefix:
        env = tracker_env(DATABASE_URL, token="t", base_url=sim.base_url,
                          broker_url=REDIS_URL, queue_prefix=prefix)
        processes = Processes(env)
        try:
            worker = processes.start("worker")
            processes.wait_for_log(worker, " ready.", timeout=60)
            ...  # enqueue, watch the database
        finally:
            processes.stop_all()
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

# The command installed next to this Python (the venv's, in a checkout).
CLI = str(Path(sys.executable).with_name("pixverse-tracker"))


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment less every tracker setting, plus ``extra``.

    TRACKER_*, USEAPI_*, DATABASE_URL and CELERY_BROKER_URL are dropped: a child process sees
    only the settings it is given, whatever the shell that runs the tests has set.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "USEAPI_"))}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env.update(extra)
    return env


def tracker_env(
    database_url: str,
    *,
    token: str,
    base_url: str,
    broker_url: str,
    queue_prefix: str,
    **settings: str,
) -> dict[str, str]:
    """The environment of a tracker process: ``base_env`` with its upstream (``base_url``, the
    simulator's, and ``token``), database, broker and queue prefix, then ``settings`` on top."""
    return base_env(
        **{
            "USEAPI_TOKEN": token,
            "USEAPI_BASE_URL": base_url,
            # The usual postgresql:// spelling, as an operator would write it: the tracker maps
            # it to psycopg2 itself.
            "DATABASE_URL": database_url.replace("postgresql+psycopg2://", "postgresql://"),
            "CELERY_BROKER_URL": broker_url,
            "TRACKER_QUEUE_PREFIX": queue_prefix,
            **settings,
        }
    )


@contextmanager
def queue_prefix(broker_url: str, name: str) -> Iterator[str]:
    """``name-<8 hex digits>``: Celery queues of our own on a Redis that another run may share.

    Redis is pinged first (a test fails with Redis's own error before anything starts); every
    key carrying the prefix is deleted afterwards.
    """
    import redis  # only the users of this function need the broker's client

    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(broker_url)
    client.ping()
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=f"*{prefix}*"):
            client.delete(key)
        client.close()


class Processes:
    """Processes started with their output in files, one per process; ``stop_all`` ends what
    is left (SIGTERM, then SIGKILL after ``stop_timeout`` seconds).

    Without a ``log_dir`` the logs go to a temporary directory that ``stop_all`` removes,
    unless ``keep_logs``. Each process gets a session of its own: a signal for this process
    group (Ctrl-C) does not reach them.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path | None = None,
        *,
        keep_logs: bool = False,
        cwd: Path | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.env = dict(env)
        self.own_log_dir = log_dir is None
        if log_dir is None:
            log_dir = Path(tempfile.mkdtemp(prefix="pixverse-processes-"))
        self.log_dir = log_dir
        self.keep_logs = keep_logs
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.started: list[subprocess.Popen[bytes]] = []
        self.log_files: dict[int, Path] = {}

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """``pixverse-tracker ARGS...``, its log named after the command."""
        return self.start_raw([CLI, *args], name=args[0] if args else None)

    def start_raw(self, argv: Sequence[str], name: str | None = None) -> subprocess.Popen[bytes]:
        """Any command; its log is ``NN-name.log`` (by default the program's name)."""
        if name is None:
            name = Path(argv[1] if argv[0] == CLI and len(argv) > 1 else argv[0]).name
        log_path = self.log_dir / f"{len(self.started) + 1:02d}-{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child owns it until it exits
        try:
            process = subprocess.Popen(
                list(argv),
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()  # the child has its own descriptor
        self.started.append(process)
        self.log_files[process.pid] = log_path
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        return self.log_files[process.pid].read_text(errors="replace")

    def logs(self) -> str:
        """Every process's output, in the order they were started."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def wait_for_log(self, process: subprocess.Popen[bytes], needle: str, timeout: float) -> None:
        """Wait until the process's output contains ``needle`` (Celery's " ready." line, say)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if needle in self.log_of(process):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{process.args!r} did not log {needle!r} within {timeout:g}s")

    def check_alive(self) -> None:
        """Raise with the log's tail if a process has exited."""
        for process in self.started:
            if process.poll() is not None:
                tail = self.log_of(process)[-3000:]
                raise RuntimeError(f"tracker process {process.args!r} exited early:\n{tail}")

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in self.started:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.own_log_dir and not self.keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)

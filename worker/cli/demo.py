"""``pixverse-tracker demo``: the simulator and the embedded tracker in one process, shown live."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pixverse_tracker.testing import Simulator, make_id

DEMO_TOKEN = "demo-token"

# (scenario tag, what the viewer should expect). Seconds are at --speed 1.
SCENARIOS = [
    ("completed_3", "404 while processing, then COMPLETED"),
    ("completed_8", "404 while processing, then COMPLETED"),
    ("completed_14", "404 while processing, then COMPLETED"),
    ("generating_2_7", "GENERATING, then COMPLETED"),
    ("failed_5", "FAILED: done, a final failure"),
    ("moderated_4", "MODERATED: done, a final failure"),
    ("deleted_3", "404 'has been deleted': abandoned"),
    ("rejected", "400: abandoned as rejected"),
    ("ratelimit_2_4", "429 twice: the global rate backs off"),
    ("retryafter_1_2_4", "429 with Retry-After"),
    ("errors_3_3", "5xx three times, then COMPLETED"),
    ("slow_1_4_3", "one answer slower than the timeout"),
    ("garbage_4_3", "garbage bodies, then COMPLETED"),
    ("queuedfinal_2_8", "QUEUED claiming final: an anomaly, polled on"),
    ("nourl_2_8", "COMPLETED without a url: polled on"),
    ("unknown_2_6", "an unknown status code, then COMPLETED"),
    ("never", "never finishes: abandoned as expired"),
]
# One account with several videos: useapi.net knows them from the start, so one list read
# answers for all of them (QUEUED, then GENERATING, then COMPLETED, seen on the list).
TEAM = [(f"queued_{1 + n}_{5 + 2 * n}", "shares its account's list reads") for n in range(5)]
TEAM_EMAIL = "studio@example.com"


def _scaled(tag: str, speed: float) -> str:
    name, *params = tag.split("_")
    scaled = []
    for i, value in enumerate(params):
        # counts (N) stay whole; times are divided by the speed
        is_count = name in {"ratelimit", "retryafter", "errors", "slow", "garbage"} and i == 0
        scaled.append(value if is_count else f"{float(value) / speed:g}")
    return "_".join([name, *scaled])


def _demo_environment(base_url: str, data_dir: Path, speed: float) -> dict[str, str]:
    def t(seconds: float) -> str:
        return f"{seconds / speed:g}"

    return {
        "USEAPI_TOKEN": DEMO_TOKEN,
        "USEAPI_BASE_URL": base_url,
        "DATABASE_URL": f"sqlite:///{(data_dir / 'demo.db').as_posix()}",
        "CELERY_BROKER_URL": "",
        "TRACKER_DATA_DIR": str(data_dir),
        "TRACKER_DISPATCH_INTERVAL": t(0.5),
        "TRACKER_FIRST_POLL_DELAY": t(0.5),
        "TRACKER_POLL_INTERVAL_MIN": t(1),
        "TRACKER_POLL_INTERVAL_MAX": t(2),
        "TRACKER_LIST_INTERVAL": t(0.7),
        "TRACKER_LIST_RETRY": t(3600),
        "TRACKER_GIVE_UP_AFTER": t(25),
        "TRACKER_RATE_LIMIT": "20",
        "TRACKER_HTTP_CONNECT_TIMEOUT": "1",
        "TRACKER_HTTP_TIMEOUT": t(2),
        "TRACKER_LEASE": "12",
        "TRACKER_AUTH_PAUSE": t(2),
        "TRACKER_RATE_LIMIT_PAUSE": t(2),
        "TRACKER_RATE_RECOVERY": t(5),
        "TRACKER_LOG_LEVEL": "ERROR",
        "TRACKER_METRICS_PORT": "0",
        "TRACKER_BEAT_METRICS_PORT": "0",
    }


def run_demo(speed: float = 1.0, out: TextIO | None = None, timeout: float = 120.0) -> int:
    from celery import beat
    from celery.worker import state as worker_state

    from pixverse_tracker import api
    from pixverse_tracker.cli.context import CommandError, open_runtime
    from pixverse_tracker.cli.render import VIDEO_HEADERS, render_table, video_rows
    from pixverse_tracker.jobs.app import app
    from pixverse_tracker.service.reading import list_videos
    from pixverse_tracker.service.status import summary
    from pixverse_tracker.settings import load

    out = out or sys.stdout
    if speed <= 0:
        raise CommandError("--speed must be positive")
    data_dir = Path(os.environ.get("TRACKER_DATA_DIR", ".pixverse-tracker")) / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    simulator = Simulator(token=DEMO_TOKEN).start()
    os.environ.update(_demo_environment(simulator.base_url, data_dir, speed))
    os.environ.pop("CELERY_BROKER_URL", None)
    rt = open_runtime(load())

    video_ids = [make_id(_scaled(tag, speed), n) for n, (tag, _) in enumerate(SCENARIOS, start=1)]
    team = [f"user:1-pixverse:{TEAM_EMAIL}-video:{100 + n}" for n in range(len(TEAM))]
    for video_id, (tag, _) in zip(team, TEAM, strict=True):
        simulator.script(video_id, _scaled(tag, speed))
    # The single-scenario ids are kept off the lists: the tracker falls back to polling each by
    # id, where their scripted answers play out. Every clock starts now, at creation.
    simulator.create_many(video_ids, listed=False)
    simulator.create_many(team)
    video_ids += team
    api.enqueue(video_ids, rt=rt)
    out.write(f"demo: simulator at {simulator.base_url}, database {rt.settings.database_url}\n")
    out.write(
        f"demo: tracking {len(video_ids)} videos: one per scenario, and {len(team)} of one "
        f"account ({TEAM_EMAIL})\n\n"
    )

    clock = beat.EmbeddedService(app, thread=True, scheduler_cls=app.conf.beat_scheduler)
    worker = app.WorkController(
        pool_cls="threads",
        concurrency=rt.settings.worker_concurrency,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="ERROR",
    )
    thread = threading.Thread(target=worker.start, name="demo-worker", daemon=True)
    clock.start()
    thread.start()
    started = time.monotonic()
    try:
        with progress_view(out, len(video_ids)) as show:
            while True:
                with rt.sessions.begin() as session:
                    counts = summary(session, rt.policy).counts
                show(counts, time.monotonic() - started)
                if _finished(counts) >= len(video_ids) or time.monotonic() - started > timeout:
                    break
                time.sleep(0.5)
    finally:
        worker_state.should_terminate = 0  # the documented way to stop a worker in a thread
        thread.join(15)
        clock.stop()
        simulator.stop()
        worker_state.should_terminate = None
    out.write("\n")
    listing = list_videos(rt, limit=None)
    by_id = {v.video_id: v for v in listing.videos}
    rows = video_rows([by_id[v] for v in video_ids], listing.now)
    for row, (_, expected) in zip(rows, SCENARIOS + TEAM, strict=True):
        row.append(expected)
    render_table((*VIDEO_HEADERS, "SCENARIO"), rows, out)
    lists = len(simulator.list_requests())
    out.write(
        f"\nrequests sent to the simulator: {len(simulator.requests)}, of which {lists} list "
        f"reads ({len(simulator.list_requests(TEAM_EMAIL))} for {TEAM_EMAIL})\n"
    )
    out.write(
        f"inspect it: DATABASE_URL={os.environ['DATABASE_URL']} pixverse-tracker list"
        "   (in this repository: ./dev list)\n"
    )
    rt.close()
    pending = sum(1 for v in listing.videos if v.state == "pending")
    return 0 if pending == 0 else 1


Show = Callable[[dict[str, int], float], None]


@contextmanager
def progress_view(out: TextIO, total: int) -> Iterator[Show]:
    """Progress on ``out`` while the demo runs: ``show(counts, elapsed)`` after each look.

    On a terminal a live view owns it: rich redraws the bar in place and prints log records
    above it, never through it. Anywhere else (a pipe, a CI log) one line per change of the counts.
    """
    if not out.isatty():
        yield _line_per_change(out, total)
        return
    from rich.console import Console
    from rich.live import Live
    from rich.logging import RichHandler
    from rich.text import Text

    console = Console(file=out)
    root = logging.getLogger()
    saved = root.handlers[:]
    # While the view is up, log records go through its console, which prints them above it.
    root.handlers = [
        RichHandler(console=console, show_path=False, markup=False, log_time_format="[%X]")
    ]
    try:
        with Live(console=console, refresh_per_second=4) as live:

            def show(counts: dict[str, int], elapsed: float) -> None:
                line = f"[{_bar(counts, total)}] {_progress(counts, total, elapsed)}"
                live.update(Text(line, no_wrap=True, overflow="ellipsis"))

            yield show
    finally:
        root.handlers = saved


def _line_per_change(out: TextIO, total: int) -> Show:
    shown: list[dict[str, int]] = []

    def show(counts: dict[str, int], elapsed: float) -> None:
        if shown and shown[-1] == counts:
            return
        shown.append(dict(counts))
        out.write(_progress(counts, total, elapsed) + "\n")
        out.flush()

    return show


def _bar(counts: dict[str, int], total: int, width: int = 30) -> str:
    filled = int(width * _finished(counts) / total) if total else width
    return "#" * filled + "-" * (width - filled)


def _progress(counts: dict[str, int], total: int, elapsed: float) -> str:
    return (
        f"{_finished(counts)}/{total} finished  (done {counts['done']}, "
        f"abandoned {counts['abandoned']}, pending {counts['pending']})  {elapsed:4.0f}s"
    )


def _finished(counts: dict[str, int]) -> int:
    return counts["done"] + counts["abandoned"]

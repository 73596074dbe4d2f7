"""Detection latency with useapi.net's ``replyUrl`` pushes beside polling alone.

What it measures. The same workload as ``bench.latency`` (its ``workload()``: a log-normal body
around 90 s, a tail to 20 min, ~3% failing, ~2% never finishing) is played twice through real
``pixverse-tracker worker`` and ``beat`` processes with the default settings, every timing
divided by ``--speed``, each run on a fresh database, queue prefix and simulator:

(a) polling only, as ``bench.latency`` does;
(b) with pushes: the push receiver
    (``pixverse_tracker.web.builtin_server.make_dev_server``, the server behind
    ``pixverse-tracker push-receiver``) runs in a thread of this process, and a scheduler thread
    plays useapi.net: at each video's simulated completion (or failure) it POSTs the record,
    as JSON with ``video_id``, to ``/callbacks/<secret>``.

Reading the output. One line per run (wall and real time, load average; ``TIMED OUT`` means
partial figures). The table gives, for (a) and (b), the finished videos, ``done_at`` minus the
simulated completion (p50 / p95 / max, real seconds) and upstream calls per finished video and
per video overall. With pushes the latency should fall to about one dispatch interval (the
line ``p50 = ... and p95 = ... dispatch intervals``: about 1 is good); the calls columns show
what the polls that confirm the pushes cost. A push is a hint, never a verdict: the ``pushes
are hints`` line should say that every video done after its push was made done by a poll sent
after it (N of N); the push round trip and lateness (wall ms) show the receiver keeping up,
and few videos should be done more than two dispatch intervals after their push (a push
landing while the row is claimed or already due waits for the scheduled poll).

Run: ``.venv/bin/python -m bench.push`` (300 videos at 20x: about three minutes for both runs).
Prints figures; never asserts on a time.
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from sqlalchemy import Engine, text

from bench import common
from bench.latency import SPREAD_PER_VIDEO, Observed, Video, compressed_env, workload
from bench.latency import _play as latency_play
from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import RECEIVER, Settings, SettingsError, load
from pixverse_tracker.testing import Simulator
from pixverse_tracker.web.builtin_server import make_dev_server
from pixverse_tracker.web.receiver import PUSH_PREFIX
from pixverse_tracker.web.receiver_config import SECRET_VARIABLE, from_settings

PUSH_THREADS = 8  # concurrent POSTs to the receiver, so one slow answer delays no other push


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.push",
        description=(
            "Detection latency with and without useapi.net's replyUrl pushes: the same "
            "workload run twice through the real tracker (default settings, compressed by "
            "--speed), once polling only and once with a push to the push receiver at each "
            "video's completion. Prints figures; never fails on a time."
        ),
    )
    parser.add_argument("--videos", type=int, default=300, help="videos to play (default 300)")
    parser.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="time compression: every duration is divided by this (default 20; above 6 the "
        "scheduler interval stays at its 0.5 s floor, and the run says so)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=None,
        help=f"real seconds over which the videos are submitted (default {SPREAD_PER_VIDEO:g} "
        "per video, as bench.latency)",
    )
    parser.add_argument(
        "--upstream-latency",
        type=float,
        default=0.2,
        help="real seconds the simulator takes per answer (default 0.2)",
    )
    parser.add_argument(
        "--push-delay",
        type=float,
        default=0.0,
        help="real seconds between a video's completion and useapi.net's push (default 0)",
    )
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument(
        "--only",
        choices=("poll", "push"),
        default=None,
        help="run only one of the two configurations",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="wall seconds before giving up a run"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the tracker processes' logs (path printed)"
    )
    args = parser.parse_args(argv)
    if args.spread is None:
        args.spread = SPREAD_PER_VIDEO * args.videos
    if args.videos < 1 or args.speed <= 0 or args.spread < 0 or args.upstream_latency < 0:
        parser.error("--videos and --speed must be positive, --spread and latency not negative")
    if args.push_delay < 0:
        parser.error("--push-delay must not be negative")
    return args


# --- useapi.net's push, played by a scheduler thread ---------------------------------------------


@dataclass
class PushLog:
    """What the pusher sent and what the receiver answered (monotonic, wall seconds)."""

    scheduled: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)  # when the POST started
    answers: Counter[str] = field(default_factory=Counter)  # due_now / ignored / <status>
    round_trips: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # POST start minus its scheduled moment


class _Pusher:
    """POSTs each video's final record to the receiver at its scheduled monotonic moment."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.log = PushLog()
        self.heap: list[tuple[float, str, str]] = []
        self.cond = threading.Condition()
        self.stopped = False
        self.local = threading.local()
        self.sessions: list[requests.Session] = []
        self.pool = ThreadPoolExecutor(PUSH_THREADS, thread_name_prefix="push")
        self.thread = threading.Thread(target=self._loop, name="push-scheduler", daemon=True)
        self.thread.start()

    def add(self, video_id: str, kind: str, at: float) -> None:
        with self.cond:
            heapq.heappush(self.heap, (at, video_id, kind))
            self.log.scheduled += 1
            self.cond.notify()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.stopped and (not self.heap or self.heap[0][0] > time.monotonic()):
                    timeout = self.heap[0][0] - time.monotonic() if self.heap else None
                    self.cond.wait(timeout)
                if self.stopped:
                    return
                at, video_id, kind = heapq.heappop(self.heap)
            self.pool.submit(self._post, at, video_id, kind)

    def _session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            with self.cond:
                self.sessions.append(session)
        return session

    def _post(self, at: float, video_id: str, kind: str) -> None:
        status, name = (1, "COMPLETED") if kind == "completed" else (8, "FAILED")
        # The fields of useapi.net's record that matter here; the receiver reads only video_id.
        record = {
            "video_id": video_id,
            "video_status": status,
            "video_status_name": name,
            "video_status_final": True,
            "url": "https://media.pixverse.ai/bench.mp4" if kind == "completed" else "",
        }
        started = time.monotonic()
        try:
            answer = self._session().post(self.url, json=record, timeout=10)
            outcome = str(answer.status_code)
            if answer.status_code == 202:
                outcome = "due_now" if answer.json().get("due_now") else "ignored"
        except requests.RequestException as exc:
            outcome = type(exc).__name__
        finished = time.monotonic()
        with self.cond:
            self.log.sent_at[video_id] = started
            self.log.answers[outcome] += 1
            self.log.round_trips.append(finished - started)
            self.log.late.append(started - at)

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()
        self.thread.join()
        self.pool.shutdown()
        for session in self.sessions:
            session.close()


# --- one run --------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    observed: Observed
    videos: list[Video]
    speed: float
    pushes: PushLog | None = None
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and the end
    push_sent_epoch: dict[str, float] = field(default_factory=dict)
    hinted: int = 0


def _run_once(
    name: str, args: argparse.Namespace, videos: list[Video], settings_env: dict[str, str]
) -> Run:
    with (
        common.migrated_database("pt_bench_push") as url,
        common.queue_prefix("push") as prefix,
        Simulator(
            token=common.TOKEN,
            latency=args.upstream_latency / args.speed,
            tcp_nodelay=True,  # no ~40 ms delayed-ACK stall per answer (Simulator doc)
        ) as sim,
    ):
        env = common.tracker_env(url, prefix, sim.base_url, **settings_env)
        rt = Runtime(load(env))
        engine = make_engine(url, pool=False)
        server = None
        server_thread = None
        pusher = None
        try:
            if name == "push":
                secret = secrets.token_urlsafe(32)
                config = from_settings(load({SECRET_VARIABLE: secret}, needs=(RECEIVER,)))
                server = make_dev_server("127.0.0.1", 0, rt, config)
                server_thread = threading.Thread(
                    target=server.serve_forever, name="receiver", daemon=True
                )
                server_thread.start()
                # bound to 127.0.0.1 above; server_port is the port the system picked for 0
                pusher = _Pusher(f"http://127.0.0.1:{server.server_port}{PUSH_PREFIX}{secret}")
            load_before = os.getloadavg()[0]
            observed = _play(args, videos, env, rt, engine, sim, pusher)
            result = Run(name, observed, videos, args.speed, load=(load_before, os.getloadavg()[0]))
            if pusher is not None:
                pusher.close()
                result.pushes = pusher.log
                to_epoch = time.time() - time.monotonic() + common.db_clock_offset(engine)
                result.push_sent_epoch = {
                    video_id: at + to_epoch for video_id, at in pusher.log.sent_at.items()
                }
                with engine.connect() as conn:
                    result.hinted = conn.execute(
                        text("SELECT count(*) FROM video_events WHERE kind = 'hinted'")
                    ).scalar_one()
        finally:
            if pusher is not None and not pusher.stopped:
                pusher.close()
            if server is not None:
                server.shutdown()
                server.server_close()
            rt.close()
            engine.dispose()
    return result


def _play(
    args: argparse.Namespace,
    videos: list[Video],
    env: dict[str, str],
    rt: Runtime,
    engine: Engine,
    sim: Simulator,
    pusher: _Pusher | None,
) -> Observed:
    """bench.latency's loop, plus scheduling each finishing video's push once it is submitted."""
    kinds = {v.video_id: v.kind for v in videos}

    def schedule_pushes(ids: list[str]) -> None:
        if pusher is None:
            return
        for video_id in ids:
            at = sim.completed_at(video_id)
            if at is not None:
                pusher.add(video_id, kinds[video_id], at + args.push_delay / args.speed)

    return latency_play(args, videos, env, rt, engine, sim, load({}), schedule_pushes)


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Figures:
    latencies: list[float]  # real s, finished videos
    calls_finished: float
    calls_all: float
    finished: int
    problems: list[str]
    after_push_calls: list[int] = field(default_factory=list)
    push_to_done: list[float] = field(default_factory=list)  # real s
    done_before_push: int = 0
    no_push: int = 0


def _figures(result: Run) -> Figures:
    o, speed = result.observed, result.speed
    latencies: list[float] = []
    # requests that served each video, list pages charged in shares (bench.latency's Observed)
    calls_finished: list[float] = []
    calls_all: list[float] = []
    problems: list[str] = []
    figures = Figures([], 0.0, 0.0, 0, problems)
    for video in result.videos:
        row = o.rows.get(video.video_id)
        calls = o.requests.get(video.video_id, [])
        if row is None:
            problems.append(f"{video.video_id}: never enqueued")
            continue
        calls_all.append(sum(share for _, share in calls))
        if video.kind == "never":
            continue
        expected = "COMPLETED" if video.kind == "completed" else "FAILED"
        if row["state"] != "done" or row["status_name"] != expected or row["done"] is None:
            problems.append(
                f"{video.video_id}: {row['state']} {row['status_name'] or row['abandon_reason']}"
            )
            continue
        done = float(row["done"])
        latencies.append((done - o.completion[video.video_id]) * speed)
        calls_finished.append(sum(share for _, share in calls))
        if result.pushes is not None:
            pushed = result.push_sent_epoch.get(video.video_id)
            if pushed is None:
                figures.no_push += 1
            elif done < pushed:
                figures.done_before_push += 1
            else:
                figures.after_push_calls.append(sum(1 for t, _ in calls if t >= pushed))
                figures.push_to_done.append((done - pushed) * speed)
    figures.latencies = latencies
    figures.finished = len(latencies)
    figures.calls_finished = sum(calls_finished) / max(1, len(calls_finished))
    figures.calls_all = sum(calls_all) / max(1, len(calls_all))
    return figures


def _fmt(values: Sequence[float]) -> tuple[str, str, str]:
    p = common.percentile
    return (
        f"{p(values, 50):.2f}",
        f"{p(values, 95):.2f}",
        f"{max(values, default=math.nan):.2f}",
    )


def _report(runs: list[Run], real: Settings, wall: Settings) -> None:
    speed = runs[0].speed
    figures = {r.name: _figures(r) for r in runs}
    print()
    for r in runs:
        o = r.observed
        print(
            f"run {r.name}: {o.wall_seconds:.0f}s wall = {o.wall_seconds * speed / 60:.1f} min real"
            + ("; TIMED OUT, figures are partial" if o.timed_out else "")
            + f"; load average {r.load[0]:.1f} -> {r.load[1]:.1f} on {os.cpu_count()} CPUs"
            + (
                "; stopped once only never-finishing videos were pending (their calls are "
                "counted up to then, not extrapolated)"
                if o.stopped_early
                else ""
            )
        )
        f = figures[r.name]
        if f.problems:
            print(f"  UNEXPECTED END STATES ({len(f.problems)}):")
            for line in f.problems[:10]:
                print(f"    {line}")
        negative = [x for x in f.latencies if x < 0]
        if negative:
            print(
                f"  WARNING: {len(negative)} videos were marked done before they finished "
                f"(by up to {-min(negative):.2f}s real: the two clocks' offset and submission "
                "timing, or a real early done)"
            )

    print()
    print(
        "detection latency: done_at minus the simulated completion, real seconds "
        f"(wall seconds x {speed:g}); finished videos only"
    )
    rows = []
    for r in runs:
        f = figures[r.name]
        label = "(a) polling only" if r.name == "poll" else "(b) with pushes"
        rows.append(
            [
                label,
                str(f.finished),
                *_fmt(f.latencies),
                f"{f.calls_finished:.2f}",
                f"{f.calls_all:.2f}",
            ]
        )
    common.print_table(
        ["", "videos", "p50", "p95", "max", "calls/finished", "calls/video (all)"], rows
    )
    dispatch = real.dispatch_interval
    print(
        f"  dispatch interval: {dispatch:g}s real ({wall.dispatch_interval:g}s wall); poll "
        f"interval {real.poll_interval_min:g}-{real.poll_interval_max:g}s real"
    )
    push_run = next((r for r in runs if r.name == "push"), None)
    if push_run is None or push_run.pushes is None:
        return
    f = figures["push"]
    p = common.percentile
    print(
        f"  with pushes: p50 = {p(f.latencies, 50) / dispatch:.2f} and p95 = "
        f"{p(f.latencies, 95) / dispatch:.2f} dispatch intervals (the claim: about one)"
    )
    pushes = push_run.pushes
    answers = ", ".join(f"{k} {v}" for k, v in sorted(pushes.answers.items()))
    trips = [x * 1000 for x in pushes.round_trips]
    late = [x * 1000 for x in pushes.late]
    print(
        f"  pushes: {pushes.scheduled} scheduled, {sum(pushes.answers.values())} sent "
        f"({answers}); 'hinted' events written: {push_run.hinted}"
    )
    print(
        f"  push POST round trip (wall ms): p50 {p(trips, 50):.1f}, p95 {p(trips, 95):.1f}, "
        f"max {max(trips, default=math.nan):.1f}; sent after its moment (wall ms): p50 "
        f"{p(late, 50):.1f}, max {max(late, default=math.nan):.1f}"
    )
    confirmed = sum(n >= 1 for n in f.after_push_calls)
    print(
        f"  pushes are hints: {confirmed} of {len(f.after_push_calls)} videos done after their "
        f"push were made done by a poll sent after the push (upstream calls after the push: "
        f"mean {sum(f.after_push_calls) / max(1, len(f.after_push_calls)):.2f}, max "
        f"{max(f.after_push_calls, default=0)}); {f.done_before_push} were already done by a "
        f"poll before their push arrived; {f.no_push} had no push"
    )
    print("  push sent to done_at (real s): p50 {}, p95 {}, max {}".format(*_fmt(f.push_to_done)))
    slow = sorted(f.push_to_done, reverse=True)
    over = sum(x > 2 * dispatch for x in slow)
    print(
        f"  videos done more than two dispatch intervals after their push: {over} "
        "(a push that lands while the row is claimed or already due is ignored; the row then "
        "waits for its scheduled poll)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        real = load({})
        videos = workload(args.videos, args.spread, args.speed, args.seed)
        settings_env = compressed_env(real, args.speed)
        wall = load(settings_env)
        engine = make_engine(common.PG_ADMIN_URL, pool=False)
        try:
            print("detection latency with replyUrl pushes (issue 5, item 3)")
            print(f"  machine: {common.machine_summary(engine)}")
        finally:
            engine.dispose()
        print(f"  code: {common.git_revision()}")
        kinds = Counter(v.kind for v in videos)
        print(
            f"  workload (bench.latency's, seed {args.seed}): {len(videos)} videos "
            f"({kinds['completed']} complete, {kinds['failed']} fail, {kinds['never']} never "
            f"finish) submitted over {args.spread:g}s real; speed {args.speed:g}x; upstream "
            f"answers in {args.upstream_latency:g}s real; push {args.push_delay:g}s after "
            "completion"
        )
        runs = []
        for name in ("poll", "push"):
            if args.only not in (None, name):
                continue
            print(f"run {name}: {'polling only' if name == 'poll' else 'with pushes'}", flush=True)
            runs.append(_run_once(name, args, videos, settings_env))
        _report(runs, real, wall)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

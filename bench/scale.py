"""Benchmark 3 of issue 4 (Scale) and issue 3, item 7 (Load): many pending ids.

Against a throwaway Postgres database, Redis queues of its own and the in-process simulator:

1. enqueues ``--ids`` ids through the real CLI (``pixverse-tracker enqueue -``, fed on stdin
   from a generator) and reports its wall time, ids/s and peak RSS (``wait4`` rusage);
2. times the dispatch claim (``store.claim_due`` in its own transaction, rolled back so every
   call sees the same full table and an idle limiter) with the default rate budget and a large
   one, before and after ``ANALYZE videos``, and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the
   exact claim statement and of the ``owned_rows`` query for one batch (both captured from the
   store's own calls with a ``before_cursor_execute`` listener);
3. unless ``--no-drain``: drains every id (scenario ``completed_0``: COMPLETED at the first
   poll) with one real ``worker`` and one ``beat``, sampling their RSS every few seconds, then
   checks in SQL that nothing is pending and that every id has exactly one 'done' event.

Run: ``.venv/bin/python -m bench.scale --ids 100000`` (``--ids 1000000 --no-drain`` for the
full issue-4 size). Prints figures; never asserts on a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

from bench import common
from worker import db, store
from worker.runtime import Runtime
from worker.settings import load
from worker.simulator import Simulator, make_id

SCENARIO = "completed_0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=(
            "Benchmark 3 of issue 4 and issue 3 item 7: enqueue many ids through the CLI, time "
            "the dispatch claim at that size with its EXPLAIN plan, and drain them with one "
            "worker and one beat while sampling their memory. Prints figures; never fails on a "
            "time."
        ),
    )
    parser.add_argument("--ids", type=int, default=100_000, help="ids to enqueue (default 100000)")
    parser.add_argument(
        "--no-drain", action="store_true", help="skip the drain (enqueue, claim timing, EXPLAIN)"
    )
    parser.add_argument(
        "--repeat", type=int, default=20, help="claim_due calls per measurement (default 20)"
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=400.0,
        help="TRACKER_RATE_LIMIT while draining (default 400)",
    )
    parser.add_argument(
        "--sample-every", type=float, default=5.0, help="RSS sampling period, s (default 5)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=1800.0,
        help="give up draining after this many seconds and report what was done (default 1800)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the tracker processes' logs (path printed)"
    )
    args = parser.parse_args(argv)
    if args.ids < 1 or args.repeat < 1 or args.rate_limit <= 0 or args.sample_every <= 0:
        parser.error("--ids, --repeat, --rate-limit and --sample-every must be positive")
    return args


def ids(count: int) -> Iterator[str]:
    for n in range(1, count + 1):
        yield make_id(SCENARIO, n, user=1 + n % 10)


# --- 1. enqueue through the CLI ----------------------------------------------------------------


def enqueue_with_cli(env: dict[str, str], count: int) -> tuple[float, float, str]:
    """Feed ``count`` ids to ``pixverse-tracker enqueue -``: (seconds, peak RSS MiB, its output)."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        process = subprocess.Popen(
            [common.CLI, "enqueue", "-"],
            env=env,
            cwd=common.REPO,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        assert process.stdin is not None
        buffer: list[str] = []
        for video_id in ids(count):
            buffer.append(video_id)
            if len(buffer) == 10_000:
                process.stdin.write(("\n".join(buffer) + "\n").encode())
                buffer.clear()
        if buffer:
            process.stdin.write(("\n".join(buffer) + "\n").encode())
        process.stdin.close()
        # wait4, not getrusage(RUSAGE_CHILDREN): the rusage of this one child, nothing else.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode(errors="replace").strip()
    if process.returncode != 0:
        raise RuntimeError(f"enqueue exited with {process.returncode}:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output  # ru_maxrss is in KiB on Linux


# --- 2. the claim -----------------------------------------------------------------------------


class Capture:
    """Statements (and parameters) an engine sends while ``active``, for EXPLAIN."""

    def __init__(self, engine: Engine) -> None:
        self.active = False
        self.seen: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._hook)

    def _hook(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        if self.active:
            self.seen.append((statement, params))

    def find(self, *needles: str) -> tuple[str, Any]:
        for statement, params in self.seen:
            if all(n in statement for n in needles):
                return statement, params
        raise RuntimeError(f"no captured statement contains {needles!r}")


def claim_once(rt: Runtime, rate: float) -> tuple[float, int]:
    """One claim_due in its own transaction, rolled back: (milliseconds, ids claimed)."""
    s = rt.settings
    with rt.sessions() as session:
        started = time.perf_counter()
        with session.begin():
            claim = store.claim_due(
                session,
                rate_limit=rate,
                horizon=s.dispatch_interval,
                lease=s.lease,
                policy=rt.policy,
            )
            elapsed = time.perf_counter() - started
            session.rollback()
    return 1000 * elapsed, len(claim.slots)


def time_claims(rt: Runtime, repeat: int, label: str) -> list[list[str]]:
    rows = []
    for rate in (rt.settings.rate_limit, 500.0):
        times = []
        claimed = 0
        for _ in range(repeat):
            ms, claimed = claim_once(rt, rate)
            times.append(ms)
        rows.append(
            [
                f"{label}, rate {rate:g}/s x {rt.settings.dispatch_interval:g}s",
                str(claimed),
                f"{statistics.median(times):.1f}",
                f"{common.percentile(times, 95):.1f}",
                f"{max(times):.1f}",
            ]
        )
    return rows


def explain(rt: Runtime, capture: Capture, rate: float) -> tuple[list[str], list[str], int]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim's UPDATE and of owned_rows for one batch.

    Both statements are captured from the store's own calls. owned_rows is explained in the
    claim's transaction (so the rows carry the token); the claim in a fresh transaction with the
    captured parameters, so it sees the same table the timed claims saw. Both rolled back.
    """
    s = rt.settings
    with rt.sessions() as session, session.begin():
        capture.seen.clear()
        capture.active = True
        claim = store.claim_due(
            session, rate_limit=rate, horizon=s.dispatch_interval, lease=s.lease, policy=rt.policy
        )
        batch = [video_id for video_id, _ in claim.slots][:25]
        assert claim.token is not None
        store.owned_rows(session, claim.token, batch, 1.0)
        capture.active = False
        owned_plan = _explain(session, *capture.find(*OWNED))
        session.rollback()
    with rt.sessions() as session, session.begin():
        claim_plan = _explain(session, *capture.find(*CLAIM))
        session.rollback()
    return claim_plan, owned_plan, len(batch)


CLAIM = ("UPDATE videos", "FOR UPDATE SKIP LOCKED")
OWNED = ("SELECT videos.video_id", "videos.claim_token = ")


def _explain(session: Any, sql: str, params: Any) -> list[str]:
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.close()


def show_sql(sql: str, params: Any) -> str:
    return " ".join(sql.split()) + f"  -- params: {params!r}"


def stats_line(engine: Engine) -> str:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT c.reltuples, s.last_analyze, s.last_autoanalyze, s.n_live_tup "
                "FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.relname = 'videos'"
            )
        ).one()
    return (
        f"reltuples={row.reltuples:.0f}, n_live_tup={row.n_live_tup}, "
        f"last_analyze={row.last_analyze}, last_autoanalyze={row.last_autoanalyze}"
    )


def print_plan(title: str, lines: list[str]) -> None:
    print(f"  {title}")
    for line in lines:
        print(f"    {line}")
    used = any("ix_videos_due" in line for line in lines)
    print(f"    -> partial index ix_videos_due used: {'yes' if used else 'NO'}")


# --- 3. the drain -------------------------------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, count(*) FROM videos GROUP BY state")).all()
    return {str(state): int(n) for state, n in rows}


def drain(args: argparse.Namespace, env: dict[str, str], engine: Engine, sim: Simulator) -> None:
    drain_env = dict(
        env,
        TRACKER_RATE_LIMIT=f"{args.rate_limit:g}",
        TRACKER_BATCH_SIZE="100",
        TRACKER_POLL_CONCURRENCY="16",
        TRACKER_METRICS_PORT="0",
        TRACKER_BEAT_METRICS_PORT="0",
    )
    print()
    print(
        f"3. drain: one worker + one beat, TRACKER_RATE_LIMIT={args.rate_limit:g}, batch 100, "
        f"poll concurrency 16, first poll delay 0, scenario {SCENARIO}"
    )
    processes = common.Processes(drain_env, keep_logs=args.keep_logs)
    samples: list[tuple[float, float | None, float | None, int]] = []
    try:
        started = time.monotonic()
        beat = processes.start("beat")
        worker = processes.start("worker")
        while not sim.requests:
            processes.check_alive()
            if time.monotonic() - started > 120:
                raise RuntimeError("no upstream request within 120 s of starting the worker")
            time.sleep(0.2)
        first_request = time.monotonic()
        print(f"  first upstream request {first_request - started:.1f}s after starting them")
        next_sample = first_request
        pending = args.ids
        while True:
            processes.check_alive()
            now = time.monotonic()
            if now >= next_sample:
                pending = counts(engine).get("pending", 0)
                samples.append(
                    (now - first_request, rss_mib(worker.pid), rss_mib(beat.pid), pending)
                )
                t, w, b, p = samples[-1]
                print(f"  t={t:6.0f}s  pending {p:>8}  worker {w:.1f} MiB  beat {b:.1f} MiB")
                next_sample += args.sample_every
            if pending == 0:
                break
            if now - first_request > args.drain_timeout:
                print(f"  GAVE UP after {args.drain_timeout:g}s with {pending} still pending")
                break
            time.sleep(0.2)
        drained_in = time.monotonic() - first_request
        time.sleep(2)  # let the last answers' log lines and counters settle
        processes.check_alive()
    finally:
        processes.stop_all()
        if args.keep_logs:
            print(f"  logs kept in {processes.log_dir}")
    requests = sim.requests
    report_drain(args, engine, samples, drained_in, requests)


def report_drain(
    args: argparse.Namespace,
    engine: Engine,
    samples: list[tuple[float, float | None, float | None, int]],
    drained_in: float,
    requests: list[Any],
) -> None:
    per_id = Counter(r.video_id for r in requests if r.video_id)
    statuses = Counter(r.status for r in requests)
    print()
    done = args.ids - (samples[-1][3] if samples else args.ids)
    print(
        f"  drained {done} ids in {drained_in:.0f}s (first request to pending == 0): "
        f"{done / max(drained_in, 1e-9):.0f} ids/s; {len(requests)} upstream requests = "
        f"{len(requests) / max(drained_in, 1e-9):.0f}/s "
        f"({100 * len(requests) / max(drained_in, 1e-9) / args.rate_limit:.0f}% of the limit)"
    )
    print(
        f"  requests per id: {len(requests) / args.ids:.3f} (max for one id "
        f"{max(per_id.values(), default=0)}, ids never requested {args.ids - len(per_id)}); "
        f"answers {dict(sorted(statuses.items()))}"
    )
    rows = []
    for index, name in ((1, "worker"), (2, "beat")):
        values = [s[index] for s in samples if s[index] is not None]
        if not values:
            continue
        start, end = values[0], values[-1]
        rows.append(
            [
                name,
                f"{start:.1f}",
                f"{max(values):.1f}",
                f"{end:.1f}",
                f"{end / start:.2f}",
                str(len(values)),
            ]
        )
    print()
    print(f"  RSS (VmRSS, MiB) sampled every {args.sample_every:g}s while draining")
    common.print_table(["process", "start", "peak", "end", "end/start", "samples"], rows)
    with engine.connect() as conn:
        state = counts(engine)
        not_one = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT v.video_id, count(e.id) AS n FROM videos v "
                "LEFT JOIN video_events e ON e.video_id = v.video_id AND e.kind = 'done' "
                "GROUP BY v.video_id) AS t WHERE n <> 1"
            )
        ).scalar_one()
        done_events = conn.execute(
            text("SELECT count(*) FROM video_events WHERE kind = 'done'")
        ).scalar_one()
    print()
    print(f"  end state (SQL): {dict(sorted(state.items()))}")
    print(
        f"  'done' events: {done_events} for {args.ids} ids; ids without exactly one: {not_one} "
        f"-> {'OK' if not_one == 0 and state.get('pending', 0) == 0 else 'NOT OK'}"
    )


# --- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    common.simulator_without_nagle()
    with (
        common.migrated_database("pt_bench_scale") as url,
        common.queue_prefix("scale") as prefix,
        Simulator(token=common.TOKEN) as sim,
    ):
        env = common.tracker_env(url, prefix, sim.base_url, TRACKER_FIRST_POLL_DELAY="0")
        rt = Runtime(load(env))
        engine = db.make_engine(url, pool=False)
        try:
            return _measure(args, env, rt, engine, sim)
        finally:
            rt.close()
            engine.dispose()


def _measure(
    args: argparse.Namespace, env: dict[str, str], rt: Runtime, engine: Engine, sim: Simulator
) -> int:
    print("benchmark 3: scale")
    print(f"  machine: {common.machine_summary(engine)}")
    print(f"  code: {common.git_revision()}")

    print()
    print(f"1. enqueue {args.ids} ids: `pixverse-tracker enqueue -` fed on stdin")
    seconds, peak_mib, output = enqueue_with_cli(env, args.ids)
    print(
        f"  {seconds:.1f}s wall = {args.ids / seconds:.0f} ids/s; CLI peak RSS {peak_mib:.1f} MiB"
    )
    print(f"  CLI said: {output.splitlines()[-1] if output else '(nothing)'}")
    with engine.connect() as conn:
        size = conn.execute(
            text("SELECT pg_total_relation_size('videos'), pg_total_relation_size('video_events')")
        ).one()
    print(
        f"  table sizes: videos {size[0] / 2**20:.0f} MiB, video_events {size[1] / 2**20:.0f} MiB"
    )
    print(f"  {dict(sorted(counts(engine).items()))}")

    print()
    print(
        f"2. dispatch claim: store.claim_due in its own transaction, rolled back, {args.repeat}x "
        "per row (every call sees all ids due and an idle limiter)"
    )
    capture = Capture(rt.engine)
    print(f"  statistics as found: {stats_line(engine)}")
    rows = time_claims(rt, args.repeat, "as found")
    with engine.connect() as conn:
        conn.execute(text("ANALYZE videos"))
        conn.commit()
    print(f"  ANALYZE videos done: {stats_line(engine)}")
    rows += time_claims(rt, args.repeat, "after ANALYZE")
    common.print_table(["claim", "ids", "median ms", "p95 ms", "max ms"], rows)

    if capture is not None:
        print()
        default_rate = rt.settings.rate_limit
        claim_plan, owned_plan, batch = explain(rt, capture, default_rate)
        claim_sql, claim_params = capture.find(*CLAIM)
        owned_sql, owned_params = capture.find(*OWNED)
        print("  claim statement (captured from claim_due):")
        print(f"    {show_sql(claim_sql, claim_params)}")
        print_plan(
            f"EXPLAIN (ANALYZE, BUFFERS), rate {default_rate:g}/s (after ANALYZE):", claim_plan
        )
        big_claim, _, _ = explain(rt, capture, 500.0)
        print_plan("EXPLAIN (ANALYZE, BUFFERS), rate 500/s (after ANALYZE):", big_claim)
        print(f"  owned_rows statement for a {batch}-id batch (captured):")
        print(f"    {show_sql(owned_sql, {k: v for k, v in list(owned_params.items())[:3]})} ...")
        print_plan("EXPLAIN (ANALYZE, BUFFERS):", owned_plan)
    else:
        print("  could not find the runtime's engine: no EXPLAIN")

    if not args.no_drain:
        drain(args, env, engine, sim)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return common.run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

"""Many pending ids: the cost of enqueuing them, of claiming due ids among them, and of draining.

What it measures. Against a throwaway Postgres database, Redis queues of its own and the
in-process simulator:

1. enqueues ``--ids`` ids, spread over ``--accounts`` PixVerse accounts
   (``user:1-pixverse:acct{n % accounts}@example.com-video:{n}``), through the real CLI
   (``pixverse-tracker enqueue -``, fed on stdin from a generator): its wall time, ids/s and
   peak RSS (``wait4`` rusage);
2. times the dispatch claim (``claim_due`` in its own transaction, rolled back so every
   call sees the same full table and an idle limiter) with the default rate budget and a large
   one, before and after ``ANALYZE videos``, each with the runtime's policy (list endpoint on:
   an account's ids share one request, leftover slots claim more rows in up to
   ``CLAIM_ROUNDS`` rounds of two statements) and with the list off (one id per request,
   one round), with the ids, requests and rounds of each claim; then prints
   ``EXPLAIN (ANALYZE, BUFFERS)`` of both claim statements (the locking ``SELECT ... FOR UPDATE
   SKIP LOCKED`` and the ``UPDATE`` of the ids it returned) and of the ``owned_rows`` query for
   one batch, all captured from the SQL layer's own calls with a ``before_cursor_execute``
   listener;
3. unless ``--no-drain``: drains the first ``--drain-ids`` ids (default: all) with one real
   ``worker`` and one ``beat`` at the default settings (list endpoint on), sampling their RSS
   every few seconds, until they are all done or ``--drain-seconds`` have passed. The
   simulator finishes every id at its first sight (``default_delay=0``: these ids carry no
   scenario tag) and the drained ids are ``create()``d in it beforehand, so the account lists
   show them. Ids beyond ``--drain-ids`` stay pending but are made due a year later (one
   ``UPDATE``, then ``VACUUM (ANALYZE) videos``), so the table keeps its size while only the
   drained ids are polled.

Reading the output. Enqueue: seconds, ids/s and the CLI's peak RSS (it reads stdin in chunks,
so the RSS should stay near the interpreter's floor whatever ``--ids``). Claim: one row per
statistics state x budget x policy with the ids claimed, requests, rounds and the call's
median / p95 / max in ms; good is a cost that follows the ids claimed, not the table (a few ms
for 25 ids at a million rows, with or without statistics). Each plan ends with ``-> index ...
used: yes``; ``NO`` means Postgres left the index (a scan of the table). Drain: ids per second,
upstream requests per id (list pages and by id apart; well under 1 per id on the list) and an
RSS table per process (start, peak, end, end/start): bounded is good, growing with the ids
drained is a leak. The end state in SQL must show every done id with exactly one 'done' event
(``done ids: N, of which with exactly one 'done' event: N``, none with more) and, after a full
drain, ``drained ids still pending: 0 -> OK``.

Run: ``.venv/bin/python -m bench.scale --ids 100000`` (``--ids 1000000 --drain-ids 100000
--drain-seconds 600`` for a million ids with a bounded drain). Prints figures; never asserts
on a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
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
from pixverse_tracker.db.claim import CLAIM_PLAN_SETTINGS, owned_rows, steer_claim_plan
from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.service.claim import CLAIM_ROUNDS, claim_due
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import load
from pixverse_tracker.testing import Simulator

# Ids beyond --drain-ids are made due this much later, so the drain never claims them.
PARKED = "365 days"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=(
            "Scale: enqueue many ids through the CLI, time "
            "the dispatch claim at that size with its EXPLAIN plans, and drain them with one "
            "worker and one beat while sampling their memory. Prints figures; never fails on a "
            "time."
        ),
    )
    parser.add_argument("--ids", type=int, default=100_000, help="ids to enqueue (default 100000)")
    parser.add_argument(
        "--accounts",
        type=int,
        default=1000,
        help="PixVerse accounts the ids are spread over, id n in account n %% N (default 1000)",
    )
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
        "--drain-ids",
        type=int,
        default=None,
        help="drain only the first N ids; the others stay pending, not due (default: all)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=None,
        help="stop the drain after this many seconds and report what was drained "
        "(default: until every drained id is done)",
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
    if args.accounts < 1:
        parser.error("--accounts must be positive")
    if args.drain_ids is not None and not 1 <= args.drain_ids <= args.ids:
        parser.error("--drain-ids must be between 1 and --ids")
    if args.drain_seconds is not None and args.drain_seconds <= 0:
        parser.error("--drain-seconds must be positive")
    return args


def make_scale_id(n: int, accounts: int) -> str:
    """Id ``n`` of account ``n % accounts``; no scenario tag, so the simulator finishes it
    after its default delay (0 here: at the first sight)."""
    return f"user:1-pixverse:acct{n % accounts}@example.com-video:{n}"


def ids(count: int, accounts: int) -> Iterator[str]:
    for n in range(1, count + 1):
        yield make_scale_id(n, accounts)


# --- the simulator ------------------------------------------------------------------------------


def make_simulator() -> Simulator:
    """The simulator for this benchmark: every id COMPLETED at its first sight."""
    # tcp_nodelay: no ~40 ms delayed-ACK stall per answer, as a real upstream (Simulator doc)
    return Simulator(token=common.TOKEN, default_delay=0, tcp_nodelay=True)


# --- 1. enqueue through the CLI ----------------------------------------------------------------


def enqueue_with_cli(env: dict[str, str], count: int, accounts: int) -> tuple[float, float, str]:
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
        for video_id in ids(count, accounts):
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

# The two statements of one claim round (_claim_rows), and owned_rows.
LOCK = ("FROM videos", "FOR UPDATE SKIP LOCKED", "ORDER BY videos.next_poll_at")
CLAIM_UPDATE = ("UPDATE videos SET", "claim_token=", "ANY")
OWNED = ("SELECT videos.video_id", "videos.claim_token = ", "videos.claimed_until >")


class Capture:
    """Statements (and parameters) an engine sends while ``active``, for EXPLAIN."""

    def __init__(self, engine: Engine) -> None:
        self.active = False
        self.seen: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._hook)

    def _hook(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        if self.active:
            self.seen.append((statement, params))

    def find_all(self, *needles: str) -> list[tuple[str, Any]]:
        return [(s, p) for s, p in self.seen if all(n in s for n in needles)]

    def find(self, *needles: str) -> tuple[str, Any]:
        found = self.find_all(*needles)
        if not found:
            raise RuntimeError(f"no captured statement contains {needles!r}")
        return found[0]


@dataclasses.dataclass(frozen=True)
class ClaimRun:
    ms: float
    ids: int
    requests: int
    rounds: int  # claim rounds: one locking SELECT (and one UPDATE) each


def claim_once(rt: Runtime, capture: Capture, rate: float, policy: Policy) -> ClaimRun:
    """One claim_due in its own transaction, rolled back."""
    s = rt.settings
    with rt.sessions() as session:
        capture.seen.clear()
        capture.active = True
        started = time.perf_counter()
        with session.begin():
            claim = claim_due(
                session,
                rate_limit=rate,
                horizon=s.dispatch_interval,
                lease=s.lease,
                policy=policy,
            )
            elapsed = time.perf_counter() - started
            capture.active = False
            session.rollback()
    rounds = len(capture.find_all(*LOCK))
    capture.seen.clear()
    return ClaimRun(1000 * elapsed, len(claim.slots), len(claim.requests), rounds)


def policies(rt: Runtime) -> list[tuple[str, Policy]]:
    """The runtime's policy and the same with the list endpoint off."""
    default = rt.policy
    off = dataclasses.replace(default, list_interval=None)
    if default.list_interval is None:
        return [("list off (as set)", default)]
    return [("list on (default)", default), ("list off", off)]


def time_claims(rt: Runtime, capture: Capture, repeat: int, label: str) -> list[list[str]]:
    rows = []
    for rate in (rt.settings.rate_limit, 500.0):
        for name, policy in policies(rt):
            runs = [claim_once(rt, capture, rate, policy) for _ in range(repeat)]
            times = [r.ms for r in runs]
            last = runs[-1]
            rows.append(
                [
                    f"{label}, rate {rate:g}/s x {rt.settings.dispatch_interval:g}s",
                    name,
                    str(last.ids),
                    str(last.requests),
                    str(last.rounds),
                    f"{statistics.median(times):.1f}",
                    f"{common.percentile(times, 95):.1f}",
                    f"{max(times):.1f}",
                ]
            )
    return rows


@dataclasses.dataclass
class Plans:
    lock: list[str]
    update: list[str]
    owned: list[str]
    batch: int
    claimed: int
    requests: int
    rounds: int


def explain(rt: Runtime, capture: Capture, rate: float) -> Plans:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim's two statements and of owned_rows for one batch.

    The statements are captured from the SQL layer's own calls (the claim with the runtime's
    policy). owned_rows is explained in the claim's transaction (so the rows carry the token);
    the claim's first round in a fresh transaction with the captured parameters, so it sees the
    same table the timed claims saw: the locking SELECT first, then the UPDATE of the ids it
    returned, as claim_due runs them. Both transactions are rolled back.
    """
    s = rt.settings
    with rt.sessions() as session, session.begin():
        capture.seen.clear()
        capture.active = True
        claim = claim_due(
            session, rate_limit=rate, horizon=s.dispatch_interval, lease=s.lease, policy=rt.policy
        )
        batch = [video_id for video_id, _ in claim.slots][:25]
        assert claim.token is not None
        # owned_rows runs in a transaction of its own in a worker, without the claim's settings
        session.execute(text("; ".join(f"RESET {name}" for name in CLAIM_PLAN_SETTINGS)))
        owned_rows(session, claim.token, batch, 1.0)
        capture.active = False
        owned_plan = _explain(session, *capture.find(*OWNED))
        session.rollback()
    rounds = len(capture.find_all(*LOCK))
    with rt.sessions() as session, session.begin():
        steer_claim_plan(session)  # as claim_due plans its statements
        lock_plan = _explain(session, *capture.find(*LOCK))
        update_plan = _explain(session, *capture.find(*CLAIM_UPDATE))
        session.rollback()
    return Plans(
        lock_plan,
        update_plan,
        owned_plan,
        len(batch),
        len(claim.slots),
        len(claim.requests),
        rounds,
    )


def _explain(session: Any, sql: str, params: Any) -> list[str]:
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.close()


def _brief_value(value: Any) -> Any:
    if isinstance(value, list | tuple) and len(value) > 3:
        return f"[{', '.join(repr(v) for v in value[:2])}, ... {len(value)} values]"
    return value


def show_sql(sql: str, params: Any) -> str:
    if isinstance(params, dict):
        params = {k: _brief_value(v) for k, v in params.items()}
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


# An array literal of ids in a plan line ('{id,id,...}'::text[]): shown by its first id and count.
_ID_ARRAY = re.compile(r"'\{([^,}]*),([^}]*)\}'::text\[\]")


def _short_arrays(line: str) -> str:
    return _ID_ARRAY.sub(
        lambda m: f"'{{{m.group(1)},... {m.group(2).count(',') + 2} ids}}'::text[]", line
    )


def print_plan(title: str, lines: list[str], index: str) -> None:
    print(f"  {title}")
    for line in lines:
        print(f"    {_short_arrays(line)}")
    used = any(index in line for line in lines)
    print(f"    -> index {index} used: {'yes' if used else 'NO'}")


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


# Pending ids that are not parked: the drained ids still to do. Read from the partial due
# index (pending rows only), not by a scan of the whole table every second.
_PENDING_DRAINED = text(
    "SELECT count(*) FROM videos WHERE state = 'pending' "
    "AND next_poll_at < now() + CAST(:parked AS interval) / 2"
)


def pending_drained(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(_PENDING_DRAINED, {"parked": PARKED}).scalar_one())


def park_the_rest(engine: Engine, drained: int) -> tuple[int, float, float]:
    """Make ids numbered above ``drained`` due a year later; then VACUUM (ANALYZE) the table,
    so autovacuum does not clean up after this UPDATE during the drain.
    Returns (rows parked, seconds for the UPDATE, seconds for the VACUUM)."""
    started = time.monotonic()
    with engine.begin() as conn:
        parked = conn.execute(
            text(
                "UPDATE videos SET next_poll_at = next_poll_at + CAST(:parked AS interval) "
                "WHERE state = 'pending' "
                "AND CAST(substring(video_id FROM '-video:([0-9]+)$') AS bigint) > :drained"
            ),
            {"parked": PARKED, "drained": drained},
        ).rowcount
    updated = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) videos"))
    return parked, updated - started, time.monotonic() - updated


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MiB"


@dataclasses.dataclass
class Sample:
    t: float
    worker_mib: float | None
    beat_mib: float | None
    pending: int  # drained ids still pending


def drain(args: argparse.Namespace, env: dict[str, str], engine: Engine, sim: Simulator) -> None:
    drain_env = dict(
        env,
        TRACKER_RATE_LIMIT=f"{args.rate_limit:g}",
        TRACKER_BATCH_SIZE="100",
        TRACKER_POLL_CONCURRENCY="16",
        TRACKER_METRICS_PORT="0",
        TRACKER_BEAT_METRICS_PORT="0",
    )
    total = args.drain_ids or args.ids
    settings = load(drain_env)
    print()
    print(
        f"3. drain {total} of the {args.ids} ids ({args.accounts} accounts): one worker + one "
        f"beat, TRACKER_RATE_LIMIT={args.rate_limit:g}, batch 100, poll concurrency 16, first "
        f"poll delay 0, otherwise the default settings: list endpoint "
        f"{'on' if settings.list_enabled else 'off'} (pages of {settings.list_page_size}, up to "
        f"{settings.list_max_pages}, every {settings.list_interval:g}s per account); every id "
        "COMPLETED at its first sight"
    )
    if args.drain_seconds is not None:
        print(f"  stops after {args.drain_seconds:g}s (--drain-seconds) if not done by then")
    if total < args.ids:
        parked, update_s, vacuum_s = park_the_rest(engine, total)
        print(
            f"  parked the other {parked} ids (pending, due {PARKED} later): UPDATE "
            f"{update_s:.1f}s, VACUUM (ANALYZE) videos {vacuum_s:.1f}s"
        )
    started = time.monotonic()
    sim.create_many(ids(total, args.accounts))
    print(
        f"  created the {total} drained ids in the simulator ({time.monotonic() - started:.1f}s), "
        "so their accounts' lists show them"
    )
    to_do = pending_drained(engine)
    if to_do != total:
        print(f"  note: {to_do} of the {total} drained ids are pending before the drain")
    processes = common.tracker_processes(drain_env, keep_logs=args.keep_logs)
    samples: list[Sample] = []
    outcome = "done"
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
        next_check = first_request
        pending = to_do
        while True:
            processes.check_alive()
            now = time.monotonic()
            if now >= next_check:
                pending = pending_drained(engine)
                next_check = now + min(1.0, args.sample_every)
            if now >= next_sample:
                sample = Sample(
                    now - first_request, rss_mib(worker.pid), rss_mib(beat.pid), pending
                )
                samples.append(sample)
                print(
                    f"  t={sample.t:6.0f}s  pending {pending:>8}  worker "
                    f"{_mib(sample.worker_mib)}  beat {_mib(sample.beat_mib)}"
                )
                next_sample += args.sample_every
            if pending == 0:
                break
            elapsed = now - first_request
            if args.drain_seconds is not None and elapsed >= args.drain_seconds:
                outcome = "stopped"
                break
            if elapsed > args.drain_timeout:
                outcome = "gave up"
                break
            time.sleep(0.2)
        ended = time.monotonic()
        drained_in = ended - first_request
        pending = pending_drained(engine)
        samples.append(Sample(drained_in, rss_mib(worker.pid), rss_mib(beat.pid), pending))
        if outcome == "stopped":
            print(f"  stopped after {drained_in:.0f}s as asked, {pending} drained ids pending")
        elif outcome == "gave up":
            print(f"  GAVE UP after {args.drain_timeout:g}s with {pending} still pending")
        time.sleep(2)  # let the last answers' log lines and counters settle
        processes.check_alive()
    finally:
        processes.stop_all()
        if args.keep_logs:
            print(f"  logs kept in {processes.log_dir}")
    report_drain(
        args, engine, samples, to_do, drained_in, first_request, ended, sim.requests, outcome
    )


def report_drain(
    args: argparse.Namespace,
    engine: Engine,
    samples: list[Sample],
    to_do: int,
    drained_in: float,
    first_request: float,
    ended: float,
    all_requests: list[Any],
    outcome: str,
) -> None:
    # What happened between the first request and the end of the drain (or its stop): the
    # requests the worker still sent while stopping are counted apart.
    requests = [r for r in all_requests if r.started <= ended]
    after = len(all_requests) - len(requests)
    done = to_do - samples[-1].pending
    seconds = max(drained_in, 1e-9)
    lists = [r for r in requests if r.kind == "list"]
    videos = [r for r in requests if r.kind == "video"]
    per_id = Counter(r.video_id for r in videos if r.video_id)
    accounts_read = len({r.email for r in lists})
    per_done = max(done, 1)
    print()
    until = {"done": "pending == 0", "stopped": "the stop", "gave up": "giving up"}[outcome]
    print(
        f"  drained {done} of {to_do} ids in {drained_in:.0f}s (first request to {until}): "
        f"{done / seconds:.0f} ids/s"
    )
    print(
        f"  upstream requests: {len(requests)} = {len(requests) / seconds:.1f}/s "
        f"({100 * len(requests) / seconds / args.rate_limit:.0f}% of the limit "
        f"{args.rate_limit:g}/s) = {len(requests) / per_done:.3f} per drained id"
    )
    print(
        f"    list pages:            {len(lists):>8} = {len(lists) / seconds:7.1f}/s = "
        f"{len(lists) / per_done:.3f} per drained id ({accounts_read} accounts read)"
    )
    print(
        f"    single-video requests: {len(videos):>8} = {len(videos) / seconds:7.1f}/s = "
        f"{len(videos) / per_done:.3f} per drained id ({len(per_id)} ids, max "
        f"{max(per_id.values(), default=0)} for one)"
    )
    others = len(requests) - len(lists) - len(videos)
    if others:
        print(f"    other requests:        {others:>8}")
    for name, group in (("list", lists), ("video", videos)):
        statuses = Counter(r.status for r in group)
        if statuses:
            print(f"    answers ({name}): {dict(sorted(statuses.items()))}")
    if after:
        print(f"  (+ {after} requests after that, sent while the worker stopped)")
    rows = []
    for name, attribute in (("worker", "worker_mib"), ("beat", "beat_mib")):
        values = [v for s in samples if (v := getattr(s, attribute)) is not None]
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
    print(
        f"  RSS (VmRSS, MiB) sampled every {args.sample_every:g}s while draining (and at the end)"
    )
    common.print_table(["process", "start", "peak", "end", "end/start", "samples"], rows)
    with engine.connect() as conn:
        by_state = {
            str(r.state): (int(r.ids), int(r.one), int(r.more))
            for r in conn.execute(
                text(
                    "SELECT t.state, count(*) AS ids, count(*) FILTER (WHERE t.n = 1) AS one, "
                    "count(*) FILTER (WHERE t.n > 1) AS more FROM (SELECT v.video_id, v.state, "
                    "count(e.id) AS n FROM videos v LEFT JOIN video_events e "
                    "ON e.video_id = v.video_id AND e.kind = 'done' "
                    "GROUP BY v.video_id, v.state) AS t GROUP BY t.state"
                )
            )
        }
    left = pending_drained(engine)
    done_rows, done_one, _ = by_state.get("done", (0, 0, 0))
    done_events_elsewhere = sum(one + more for s, (_, one, more) in by_state.items() if s != "done")
    twice = sum(more for _, _, more in by_state.values())
    events_ok = done_one == done_rows and twice == 0 and done_events_elsewhere == 0
    print()
    print(f"  end state (SQL): { {s: n for s, (n, _, _) in sorted(by_state.items())} }")
    print(
        f"  done ids: {done_rows}, of which with exactly one 'done' event: {done_one}; ids with "
        f"more than one: {twice}; not done but with a 'done' event: {done_events_elsewhere}"
    )
    if outcome == "stopped":
        print(
            f"  drained ids still pending once the worker had stopped: {left} (stopped as asked "
            f"after {drained_in:.0f}s; the worker finishes its running batches while stopping) "
            f"-> 'done' events {'OK' if events_ok else 'NOT OK'}"
        )
    else:
        ok = events_ok and left == 0
        print(f"  drained ids still pending: {left} -> {'OK' if ok else 'NOT OK'}")


# --- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    with (
        common.migrated_database("pt_bench_scale") as url,
        common.queue_prefix("scale") as prefix,
        make_simulator() as sim,
    ):
        env = common.tracker_env(url, prefix, sim.base_url, TRACKER_FIRST_POLL_DELAY="0")
        rt = Runtime(load(env))
        engine = make_engine(url, pool=False)
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
    print("  simulator: every id COMPLETED at its first sight (default_delay 0, no scenario tag)")

    print()
    print(
        f"1. enqueue {args.ids} ids over {args.accounts} accounts: `pixverse-tracker enqueue -` "
        "fed on stdin"
    )
    seconds, peak_mib, output = enqueue_with_cli(env, args.ids, args.accounts)
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
    policy = rt.policy
    print(
        f"2. dispatch claim: claim_due in its own transaction, rolled back, {args.repeat}x "
        "per row (every call sees all ids due and an idle limiter); with the runtime's policy "
        f"(list endpoint {'on' if policy.list_interval is not None else 'off'}: one request per "
        f"account's ids, up to {CLAIM_ROUNDS} rounds) and with the list off (one request "
        "per id, one round); a round is two statements (locking SELECT, UPDATE)"
    )
    capture = Capture(rt.engine)
    print(f"  statistics as found: {stats_line(engine)}")
    rows = time_claims(rt, capture, args.repeat, "as found")
    # the plan of the largest first round, before the table has statistics (the risky case)
    found = explain(rt, capture, 500.0)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE videos"))
        conn.commit()
    print(f"  ANALYZE videos done: {stats_line(engine)}")
    print_plan(
        "EXPLAIN (ANALYZE, BUFFERS) of the locking SELECT, rate 500/s, as found (before ANALYZE):",
        found.lock,
        "ix_videos_due",
    )
    print_plan("EXPLAIN (ANALYZE, BUFFERS) of the UPDATE, as found:", found.update, "pk_videos")
    rows += time_claims(rt, capture, args.repeat, "after ANALYZE")
    common.print_table(
        ["claim", "policy", "ids", "requests", "rounds", "median ms", "p95 ms", "max ms"], rows
    )

    print()
    default_rate = rt.settings.rate_limit
    plans = explain(rt, capture, default_rate)
    lock_sql, lock_params = capture.find(*LOCK)
    update_sql, update_params = capture.find(*CLAIM_UPDATE)
    owned_sql, owned_params = capture.find(*OWNED)
    print(
        f"  claim at rate {default_rate:g}/s with the runtime's policy: {plans.claimed} ids in "
        f"{plans.requests} requests, {plans.rounds} rounds; the first round's statements "
        "(captured from claim_due):"
    )
    print(f"    {show_sql(lock_sql, lock_params)}")
    print(f"    {show_sql(update_sql, update_params)}")
    print_plan(
        f"EXPLAIN (ANALYZE, BUFFERS) of the locking SELECT, rate {default_rate:g}/s "
        "(after ANALYZE):",
        plans.lock,
        "ix_videos_due",
    )
    print_plan("EXPLAIN (ANALYZE, BUFFERS) of the UPDATE:", plans.update, "pk_videos")
    big = explain(rt, capture, 500.0)
    print(
        f"  claim at rate 500/s: {big.claimed} ids in {big.requests} requests, {big.rounds} "
        "rounds; the first round:"
    )
    print_plan(
        "EXPLAIN (ANALYZE, BUFFERS) of the locking SELECT, rate 500/s (after ANALYZE):",
        big.lock,
        "ix_videos_due",
    )
    print_plan("EXPLAIN (ANALYZE, BUFFERS) of the UPDATE:", big.update, "pk_videos")
    print(f"  owned_rows statement for a {plans.batch}-id batch (captured):")
    print(f"    {show_sql(owned_sql, {k: v for k, v in list(owned_params.items())[:3]})} ...")
    print_plan("EXPLAIN (ANALYZE, BUFFERS):", plans.owned, "pk_videos")

    if not args.no_drain:
        drain(args, env, engine, sim)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return common.run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

"""Cheap polls: what one unchanged answer costs the database, here and at an older revision.

What it measures. An unchanged answer (another 404 "not yet", the same record again, the same
status on the list) should cost one small UPDATE at most: no event row, no rewrite of an
identical record. This measures it for the code of this checkout and, with ``--before REV``,
for an older revision checked out beside it (``git worktree``, removed afterwards), each
against a throwaway Postgres database migrated by that code's own migrations and that code's
own simulator:

1. ``--ids`` ids are enqueued and polled once (their first answer is a change: a first record,
   a status event);
2. every row is made due again and polled once more, through the same ``dispatch`` and
   ``poll_batch`` a worker runs; this second round, where nothing changes, is measured:
   the statements the tracker's engine sent (by verb), its transactions and pool checkouts
   (each with a pre-ping), rows inserted and updated per table (``pg_stat_user_tables``, flushed
   by closing the connections), and WAL bytes (``pg_current_wal_insert_lsn``, server-wide: run
   it on a quiet server).

Reading the output. One table per case (404 again, the same record, the same status on the
list), one column per revision, every figure per unchanged answer and the median of
``--repeat`` runs: statements (and of them UPDATE / INSERT / SELECT), transactions, pool
checkouts, upstream requests, ``videos`` rows updated (and of them HOT), event rows inserted
and WAL bytes. Good is about one UPDATE per answer (the INSERTs are the per-minute request
counter, once per batch), 0 event rows, and WAL bytes no higher than the older revision's; on
the list, requests and transactions well under one per answer (one page answers for many ids,
applied in one transaction). Two row versions per poll (the claim's and the answer's) are
expected.

Run: ``.venv/bin/python -m bench.writes --before REV``. REV must have the ``pixverse_tracker``
package; an older one is measured from its own checkout (9d9abc8, the revision before the
record digest, was: docs/performance.md). Prints figures; never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

# Probe mode runs with the *measured* tree first on sys.path, so nothing from this checkout
# may be imported at module level: the driver's imports live in its functions.

CASES = {
    "not_yet": "404 not yet, again",
    "same_record": "the same GENERATING record again",
    "listed": "the same status on the account's list again",
}
TOKEN = "writes-bench-token"


# --- the probe: runs inside the measured tree -----------------------------------------------------


def probe(database_url: str, case: str, count: int) -> dict[str, Any]:
    from sqlalchemy import create_engine, event, text

    import pixverse_tracker
    from pixverse_tracker import api
    from pixverse_tracker.db.engines import make_engine
    from pixverse_tracker.db.revisions import upgrade
    from pixverse_tracker.service.batch import poll_batch
    from pixverse_tracker.service.dispatch import dispatch
    from pixverse_tracker.service.runtime import Runtime
    from pixverse_tracker.settings import load
    from pixverse_tracker.testing import Simulator, make_id

    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    engine = make_engine(database_url, pool=False)
    upgrade(engine)
    engine.dispose()
    if case == "listed":
        ids = [f"user:1-pixverse:account{n % 10}@example.com-video:{n}" for n in range(count)]
    else:
        scenario = "never" if case == "not_yet" else "generating_0_1000000"
        ids = [make_id(scenario, n, user=n) for n in range(count)]
    with Simulator(token=TOKEN) as sim:
        if case == "listed":
            for video_id in ids:
                sim.script(video_id, "never")
            sim.create_many(ids)
        env = {
            "USEAPI_TOKEN": TOKEN,
            "USEAPI_BASE_URL": sim.base_url,
            "DATABASE_URL": database_url,
            "TRACKER_FIRST_POLL_DELAY": "0",
            # long enough that no id comes due again by itself during a round
            "TRACKER_POLL_INTERVAL_MIN": "300",
            "TRACKER_POLL_INTERVAL_MAX": "600",
            "TRACKER_SLOW_INTERVAL": "600",
            "TRACKER_DISPATCH_INTERVAL": "1",
            "TRACKER_RATE_LIMIT": "1000",
            "TRACKER_LIST": "true" if case == "listed" else "false",
            # first polls snap up to the account's grid: a short period, or round 1 waits
            "TRACKER_LIST_INTERVAL": "1",
            "TRACKER_LOG_LEVEL": "WARNING",
        }
        rt = Runtime(load(env))
        try:
            api.enqueue(ids, rt=rt)
            _round(rt, dispatch, poll_batch, admin, text, 1)  # the first answers change things
            admin_sql = text(
                "UPDATE videos SET next_poll_at = now(), claim_token = NULL, claimed_until = NULL"
            )
            with admin.connect() as conn:
                conn.execute(admin_sql)
            # Closing every connection flushes its backend's table counters: the round's
            # trigger above must not be counted as the measured round's work.
            admin.dispose()
            rt.engine.dispose()
            time.sleep(0.5)
            before = _snapshot(admin, text)
            statements: Counter[str] = Counter()
            counters = {"commits": 0, "checkouts": 0}

            def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                statements[statement.lstrip().split(None, 1)[0].upper()] += 1

            def on_commit(conn: Any) -> None:
                counters["commits"] += 1

            def on_checkout(*args: Any) -> None:
                counters["checkouts"] += 1

            event.listen(rt.engine, "before_cursor_execute", on_execute)
            event.listen(rt.engine, "commit", on_commit)
            event.listen(rt.engine.pool, "checkout", on_checkout)
            sent_before = len(sim.requests)
            polls = _round(rt, dispatch, poll_batch, admin, text, 2)
            requests = len(sim.requests) - sent_before
            admin.dispose()  # _round's own checks
            rt.engine.dispose()
            time.sleep(0.5)  # a closing backend's counters reach the cumulative view
            after = _snapshot(admin, text)
        finally:
            rt.close()
    admin.dispose()
    return {
        "code": str(Path(pixverse_tracker.__file__).resolve().parent.parent),
        "polls": polls,
        "requests": requests,
        "statements": dict(statements),
        **counters,
        "tables": {
            table: {k: after["tables"][table][k] - before["tables"][table].get(k, 0) for k in row}
            for table, row in after["tables"].items()
        },
        "wal_bytes": after["wal"] - before["wal"],
    }


def _round(rt: Any, dispatch: Any, poll_batch: Any, admin: Any, text: Any, round_: int) -> int:
    """Dispatch and poll until every id has been answered ``round_`` times; the answers."""
    polls = 0
    deadline = time.monotonic() + 300
    while True:
        with admin.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM videos WHERE poll_count < :n"), {"n": round_}
            ).scalar_one()
        if left == 0:
            return polls
        if time.monotonic() > deadline:
            raise RuntimeError(f"round {round_}: {left} ids still unanswered after 300 s")
        batches = dispatch(rt)
        for batch in batches:
            polls += poll_batch(rt, batch).applied
        if not batches:
            time.sleep(0.05)


def _snapshot(admin: Any, text: Any) -> dict[str, Any]:
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        tables = {
            name: {"inserted": ins, "updated": upd, "hot_updated": hot}
            for name, ins, upd, hot in conn.execute(
                text("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables")
            )
        }
        wal = conn.execute(
            text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')")
        ).scalar_one()
    return {"tables": tables, "wal": float(wal)}


# --- the driver: runs in this checkout ------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.writes",
        description=(
            "Issue 4, item 6: statements, row writes and WAL bytes per unchanged answer, for "
            "this checkout and optionally an older revision. Prints figures; never fails on one."
        ),
    )
    parser.add_argument("--ids", type=int, default=500, help="ids per case (default 500)")
    parser.add_argument(
        "--before", metavar="REV", help="also measure this revision (checked out beside this one)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case and tree; the median is shown"
    )
    parser.add_argument("--probe", nargs=3, metavar=("URL", "CASE", "IDS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


_INSTALLED: dict[Path, Path] = {}


def _installed(tree: Path) -> Path:
    """The folder the probe imports the measured tree's ``pixverse_tracker`` from.

    This checkout: its own editable install (whose links resolve into it). Another checkout: a
    copy of its package installed beside it once (``pip install --target``), since its folders
    are not import names (docs/architecture.md, "One import name").
    """
    from bench import common

    if tree == common.REPO:
        return common.REPO
    if tree not in _INSTALLED:
        if b"package-dir" not in (tree / "pyproject.toml").read_bytes():
            raise RuntimeError(
                f"{tree} predates the pixverse_tracker package: run this benchmark from that "
                "revision's own checkout to measure it"
            )
        target = tree.parent / "installed"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
             "--no-index", "--target", str(target), str(tree)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        _INSTALLED[tree] = target
    return _INSTALLED[tree]


def _run_probe(tree: Path, case: str, count: int) -> dict[str, Any]:
    from bench import common

    name = f"pt_bench_writes_{uuid.uuid4().hex[:10]}"
    admin = common._admin()
    from sqlalchemy import text

    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{common.PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        installed = _installed(tree)
        env = dict(os.environ)
        if installed != common.REPO:
            env["PYTHONPATH"] = str(installed)
        for key in [k for k in env if k.startswith(("TRACKER_", "USEAPI_"))]:
            del env[key]
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--probe", url, case, str(count)],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"probe failed in {tree} ({case}):\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if Path(result["code"]) != installed.resolve():
            raise RuntimeError(f"the probe ran the code in {result['code']}, not {tree}'s")
        return result
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _per_poll(result: dict[str, Any]) -> dict[str, float]:
    polls = max(1, int(result["polls"]))
    statements = result["statements"]
    videos = result["tables"].get("videos", {})
    events = result["tables"].get("video_events", {})
    return {
        "statements": sum(statements.values()) / polls,
        "UPDATE": statements.get("UPDATE", 0) / polls,
        "INSERT": statements.get("INSERT", 0) / polls,
        "SELECT": statements.get("SELECT", 0) / polls,
        "transactions": result["commits"] / polls,
        "checkouts": result["checkouts"] / polls,
        "requests": result["requests"] / polls,
        "videos rows updated": videos.get("updated", 0) / polls,
        "of which HOT": videos.get("hot_updated", 0) / polls,
        "event rows inserted": events.get("inserted", 0) / polls,
        "WAL bytes": result["wal_bytes"] / polls,
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def run(args: argparse.Namespace) -> int:
    from bench import common

    trees: list[tuple[str, Path]] = [("this checkout", common.REPO)]
    worktree: Path | None = None
    if args.before:
        worktree = Path(tempfile.mkdtemp(prefix="pixverse-before-")) / "tree"
        subprocess.run(
            [
                "git",
                "-C",
                str(common.REPO),
                "worktree",
                "add",
                "--detach",
                str(worktree),
                args.before,
            ],
            check=True,
            capture_output=True,
        )
        trees.insert(0, (f"before ({args.before})", worktree))
    try:
        print("cheap polls: what one unchanged answer costs the database")
        print(f"  code: {common.git_revision()}; {args.ids} ids per case, median of {args.repeat}")
        results: dict[tuple[str, str], dict[str, float]] = {}
        for label, tree in trees:
            for case in CASES:
                if case == "listed" and tree != common.REPO:
                    continue  # the list endpoint is new
                runs = [_per_poll(_run_probe(tree, case, args.ids)) for _ in range(args.repeat)]
                results[(label, case)] = {k: _median([r[k] for r in runs]) for k in runs[0]}
                print(f"  measured {label}: {CASES[case]}", flush=True)
        for case, title in CASES.items():
            columns = [label for label, _ in trees if (label, case) in results]
            print()
            print(f"per answer: {title}")
            rows = [
                [key, *(f"{results[(label, case)][key]:.2f}" for label in columns)]
                for key in next(iter(results.values()))
            ]
            common.print_table(["", *columns], rows)
        print()
        print(
            "  statements: all the tracker's engine sent in the measured round, over the answers "
            "applied (claims, row reads, applies, releases, counters); a pre-ping per checkout "
            "comes on top. WAL bytes are server-wide."
        )
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(common.REPO), "worktree", "remove", "--force", str(worktree)],
                check=False,
                capture_output=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        url, case, count = args.probe
        print(json.dumps(probe(url, case, int(count))))
        return 0
    from bench import common

    return common.run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

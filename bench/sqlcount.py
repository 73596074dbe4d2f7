"""Run a ``pixverse-tracker`` command with every SQL statement it sends counted into a JSON file.

Not a benchmark of its own: ``bench.throughput --count-statements`` runs its worker under it.
Usage: ``python -m bench.sqlcount COUNTS.json worker``. The command is the unchanged CLI entry
point; SQLAlchemy events only count, so what runs is what ``pixverse-tracker worker`` runs.

Reading the output. The file is rewritten every 0.25 s (atomically): running totals of
``statements`` and ``statement:<VERB>`` (SELECT, UPDATE, INSERT, WITH...), ``commits``,
``rollbacks`` and ``checkouts`` (pool checkouts, each one a pre-ping query), plus
``written_at_monotonic``. The totals only grow; a benchmark reads the file at the start and
at the end of its measuring window and divides the difference by the polls in between.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def _bump(key: str) -> None:
    # Poll threads run statements concurrently; Counter updates are not atomic.
    with _lock:
        _counts[key] += 1


def _statement_kind(statement: str) -> str:
    """The leading verb as sent (SELECT, UPDATE, INSERT; WITH for a CTE such as enqueue's)."""
    words = statement.lstrip().split(None, 1)
    return words[0].upper() if words else "?"


def install() -> None:
    """Count statements, commits, rollbacks and pool checkouts (each one a pre-ping query)."""

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        _bump("statements")
        _bump(f"statement:{_statement_kind(statement)}")

    @event.listens_for(Engine, "commit")
    def _commit(conn: Any) -> None:
        _bump("commits")

    @event.listens_for(Engine, "rollback")
    def _rollback(conn: Any) -> None:
        _bump("rollbacks")

    # pool_pre_ping sends "SELECT 1" in autocommit on every checkout, outside these events.
    @event.listens_for(Pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        _bump("checkouts")


def _writer(path: Path) -> None:
    temporary = path.with_suffix(".tmp")
    while True:
        with _lock:
            snapshot: dict[str, float] = dict(_counts)
        snapshot["written_at_monotonic"] = time.monotonic()
        temporary.write_text(json.dumps(snapshot))
        os.replace(temporary, path)  # readers never see half a file
        time.sleep(0.25)


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: python -m bench.sqlcount COUNTS.json COMMAND [ARGS...]", file=sys.stderr)
        return 2
    path = Path(sys.argv[1])
    install()
    threading.Thread(target=_writer, args=(path,), name="sqlcount", daemon=True).start()
    from pixverse_tracker.cli.main import main as cli_main

    return cli_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())

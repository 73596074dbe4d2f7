"""The ``pixverse-tracker`` command: migrate, enqueue, run, worker, beat, status, list, show, ..."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

from alembic.util import CommandError as AlembicError
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from pixverse_tracker import api
from pixverse_tracker.db.engines import describe_error, make_engine
from pixverse_tracker.db.reports import Summary, count_videos, events_for, get_video, list_videos
from pixverse_tracker.db.revisions import (
    LEGACY_VERSION_TABLE,
    VERSION_TABLE,
    current_revision,
    head_revision,
    is_known_revision,
    upgrade,
)
from pixverse_tracker.db.sql import current_time
from pixverse_tracker.rules import ids
from pixverse_tracker.rules.verdict import KNOWN_NAMES
from pixverse_tracker.rules.webhooks import InvalidCallbackUrl
from pixverse_tracker.service import maintenance, runtime
from pixverse_tracker.service import status as service_status
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import (
    DATABASE,
    EVERYTHING,
    LOGGING,
    MAINTENANCE,
    Settings,
    SettingsError,
    load,
)
from pixverse_tracker.web import metrics as web_metrics

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure worth one clear line to the user, never a traceback."""


# --- shared plumbing ------------------------------------------------------------------------------


def settings_for(command: str, needs: Collection[str] = (DATABASE,)) -> Settings:
    """The settings a command uses (it is refused over those only), with its database checked:
    without DATABASE_URL the embedded SQLite file is `run`'s; `migrate`, `worker` and `beat`
    refuse, and the other commands use the file only when it exists, saying so."""
    settings = load(needs=needs)
    if not settings.embedded_database or command == "run":
        return settings
    path = settings.embedded_database_path
    if command in ("migrate", "worker", "beat"):
        raise CommandError(
            f"DATABASE_URL is not set: `{command}` works on the database you name "
            "(postgresql://user@host/db, or sqlite:///path.db); only `run` falls back to the "
            f"embedded {path}"
        )
    if not path.is_file():
        raise CommandError(
            f"DATABASE_URL is not set and there is no embedded database at {path}: set "
            "DATABASE_URL to the tracker's database (only `run` creates the embedded one)"
        )
    print(
        f"pixverse-tracker: using the embedded database {path} (DATABASE_URL is not set)",
        file=sys.stderr,
    )
    return settings


def open_runtime(settings: Settings | None = None, *, migrate_sqlite: bool = True) -> Runtime:
    """Settings, engine and a schema check. The embedded SQLite database migrates itself."""
    rt = Runtime(settings or load())
    runtime.install(rt)
    head = head_revision()
    current = current_revision(rt.engine)
    if current != head:
        if current is not None and not is_known_revision(current):
            raise CommandError(
                f"the database schema is at revision {current}, which this version does not "
                f"know (it needs {head}): was it migrated by a newer version of the tracker?"
            )
        if rt.settings.is_sqlite and migrate_sqlite:
            upgrade(rt.engine)
        elif current is None:
            raise CommandError(
                "the database has no tracker tables yet: run `pixverse-tracker migrate`"
            )
        else:
            raise CommandError(
                f"the database schema is at revision {current}, this version needs {head}: "
                "run `pixverse-tracker migrate`"
            )
    return rt


def _stamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _age(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "-"
    seconds = int((now - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, default=_json_default, indent=2, ensure_ascii=False)
    out.write("\n")


PUBLIC_COLUMNS = (
    "video_id", "state", "status_code", "status_name", "status_final", "url", "first_frame",
    "prompt", "model", "duration", "output_width", "output_height", "upstream_created_at",
    "enqueued_at", "updated_at", "last_polled_at", "next_poll_at", "done_at", "poll_count",
    "error_count", "last_http_status", "last_error", "abandon_reason",
)  # fmt: skip


def video_dict(video: Any, *, with_record: bool = False) -> dict[str, Any]:
    row = {name: getattr(video, name) for name in PUBLIC_COLUMNS}
    if with_record:
        row["record"] = video.record
    return row


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out.write(line.rstrip() + "\n")
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def video_rows(videos: Sequence[Any], now: datetime) -> list[list[str]]:
    rows = []
    for v in videos:
        detail = v.abandon_reason or v.url or v.last_error or ""
        rows.append(
            [
                v.video_id,
                v.state,
                v.status_name or ("-" if v.status_code is None else str(v.status_code)),
                str(v.poll_count),
                str(v.error_count),
                _age(now, v.enqueued_at),
                detail if len(detail) <= 60 else detail[:57] + "...",
            ]
        )
    return rows


VIDEO_HEADERS = ("VIDEO_ID", "STATE", "STATUS", "POLLS", "ERRORS", "AGE", "URL / REASON")


# --- commands ------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_for("migrate")
    engine = make_engine(settings.database_url, pool=False, schema=settings.db_schema)
    try:
        before = current_revision(engine)
        moved = upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if moved is not None:
        print(f"moved revision {moved} from {LEGACY_VERSION_TABLE} to {VERSION_TABLE}")
    if before == after:
        print(f"schema already at revision {after}")
    else:
        print(f"schema migrated from {before or 'empty'} to {after}")
    return EXIT_OK


STDIN_CHUNK = 50_000  # ids validated and stored per round: memory stays flat for any input


def cmd_enqueue(args: argparse.Namespace) -> int:
    if args.ids == ["-"]:
        numbered: Iterator[tuple[int, str]] = ids.from_lines(sys.stdin)
        where = "line"
    elif "-" in args.ids:
        raise CommandError("`-` (read ids from stdin) must be the only argument")
    else:
        numbered = enumerate(args.ids, start=1)
        where = "argument"
    settings = settings_for("enqueue")
    rt: Runtime | None = None
    added = rearmed = unchanged = refused = seen = 0
    # Chunk by chunk, so a million lines on stdin never sit in memory at once; an id repeated
    # across chunks is simply "already tracked" the second time (ON CONFLICT DO NOTHING).
    for chunk in _chunked(numbered, STDIN_CHUNK):
        seen += len(chunk)
        if rt is None and any(ids.problem_with(video_id) is None for _, video_id in chunk):
            rt = open_runtime(settings)
        report = api.enqueue_numbered(
            chunk, retrack=args.retrack, callback_url=args.callback_url, rt=rt
        )
        for bad in report.refused:
            print(
                f"error: {where} {bad.where}: invalid id {ids.shown(bad.video_id)}: {bad.problem}",
                file=sys.stderr,
            )
        added += len(report.added)
        rearmed += len(report.rearmed)
        unchanged += len(report.unchanged)
        refused += len(report.refused)
    summary = f"enqueued {added} new, re-armed {rearmed}, {unchanged} already tracked"
    if refused:
        summary += f"; refused {refused} invalid"
    if not seen:
        print("error: no ids given (stdin was empty)", file=sys.stderr)
    print(summary)
    return EXIT_FAILED if refused or not seen else EXIT_OK


def _chunked(items: Iterator[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _start_token_check(settings: Settings) -> None:
    try:
        settings.require_token()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def _worker_argv(settings: Settings, extra: Sequence[str]) -> list[str]:
    return [
        "worker",
        "--pool=threads",
        f"--concurrency={settings.worker_concurrency}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_for("worker", EVERYTHING)
    _start_token_check(settings)
    if settings.embedded:
        raise CommandError(
            "CELERY_BROKER_URL is not set: a separate worker needs a shared broker; "
            "use `pixverse-tracker run` for the embedded one-process mode"
        )
    open_runtime(settings, migrate_sqlite=False)
    from pixverse_tracker.jobs.app import app

    app.worker_main(_worker_argv(settings, args.celery_args))
    return EXIT_OK


def cmd_beat(args: argparse.Namespace) -> int:
    settings = settings_for("beat", EVERYTHING)
    if settings.embedded:
        raise CommandError(
            "CELERY_BROKER_URL is not set: a separate beat needs a shared broker; "
            "use `pixverse-tracker run` for the embedded one-process mode"
        )
    open_runtime(settings, migrate_sqlite=False)
    from pixverse_tracker.jobs.app import app

    app.start(["beat", f"--loglevel={settings.log_level}", *args.celery_args])
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_for("run", EVERYTHING)
    _start_token_check(settings)
    open_runtime(settings)
    from celery import beat

    from pixverse_tracker.jobs.app import app

    web_metrics.serve(settings.metrics_port, runtime.get())  # one process: all metrics here
    # Beat in a thread of this process: with the in-process broker it is the only way the
    # dispatch ticks reach the worker, and on one machine it saves a process.
    clock = beat.EmbeddedService(app, thread=True, scheduler_cls=app.conf.beat_scheduler)
    clock.start()
    try:
        app.worker_main(_worker_argv(settings, args.celery_args))
    finally:
        clock.stop()
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    rt = open_runtime(settings_for("status"))
    if args.watch:
        return _watch(rt, args.interval)
    with rt.sessions.begin() as session:
        s = service_status.summary(session, rt.policy)
    if args.json:
        _print_json({k: getattr(s, k) for k in s.__dataclass_fields__}, sys.stdout)
        return EXIT_OK
    for line in status_lines(s, rt.settings.rate_limit, rt.settings):
        sys.stdout.write(line + "\n")
    return EXIT_OK


def status_lines(s: Summary, rate_limit: float, settings: Settings | None = None) -> list[str]:
    counts = s.counts
    lines = [
        f"pending {counts['pending']}  done {counts['done']}  abandoned {counts['abandoned']}"
        f"  (due now {s.due_now})"
    ]
    if s.oldest_pending_id:
        lines.append(
            f"oldest pending: {s.oldest_pending_id} "
            f"(enqueued {_age(s.now, s.oldest_pending_since)} ago)"
        )
    lines.append(
        f"last hour: {s.polls_last_hour} polls, {s.errors_last_hour} errors, "
        f"{s.rate_limited_last_hour} rate-limited, {s.unauthorized_last_hour} unauthorized"
    )
    if s.auth_failing:
        lines.append(
            f"UPSTREAM REJECTS THE TOKEN since {_stamp(s.auth_failed_at)}: {s.auth_error}; "
            f"polling paused until {_stamp(s.auth_paused_until)} (then one probe at a time)"
        )
    else:
        lines.append(token_line(s, settings))
    if s.throttled_until and s.throttled_until > s.now:
        lines.append(f"throttled by 429 until {_stamp(s.throttled_until)}")
    lines.append(
        f"rate: {rate_shown(rate_limit * s.rate_factor)}/s of {rate_limit:g}/s; "
        f"last dispatch {_age(s.now, s.last_dispatch_at)} ago"
    )
    if settings is not None:
        lines.append(scheduler_line(s, settings))
        lines.extend(contract_lines(s, settings))
    return lines


def token_line(s: Summary, settings: Settings | None = None) -> str:
    """What is known of the token while no 401 holds: accepted only once answers prove it."""
    answered = (
        s.polls_last_hour - s.errors_last_hour - s.rate_limited_last_hour - s.unauthorized_last_hour
    )
    if answered > 0:
        return (
            f"upstream token: accepted ({answered} answers in the last hour; "
            "no 401 since the last success)"
        )
    line = "upstream token: not proven (no upstream answer in the last hour)"
    if settings is not None and not settings.useapi_token:
        line += "; USEAPI_TOKEN is not set here"
    return line


def rate_shown(rate: float) -> str:
    """A request rate as a person reads it: ``3.8``, ``5``, ``120``, ``0.052``."""
    if rate >= 1:
        return f"{rate:.1f}".removesuffix(".0")
    return f"{rate:.2g}"


def scheduler_line(s: Summary, settings: Settings) -> str:
    """What the token-wide scheduler read is doing, in one line."""
    if not settings.scheduler_enabled:
        return "scheduler read: off (TRACKER_SCHEDULER=false): every id by the list and by id"
    if s.scheduler_failures:
        return (
            f"scheduler read: FAILING ({s.scheduler_failures} in a row, last "
            f"{_age(s.now, s.scheduler_read_at)} ago: {s.scheduler_error}); ids fall back to "
            "the list and by-id schedule"
        )
    if s.scheduler_ok_at is None:
        return "scheduler read: none yet (reads start while ids are pending)"
    return (
        f"scheduler read: {_age(s.now, s.scheduler_ok_at)} ago, "
        f"{s.scheduler_executing or 0} pending ids executing (no other request needed for them)"
    )


def contract_lines(s: Summary, settings: Settings) -> list[str]:
    """Whether the latency contract holds now, and what stretches it if not."""
    cap = f"{settings.poll_interval_max:g}s"
    paused = [
        f"{what} until {_stamp(until)}"
        for what, until in (
            ("a 401 pause", s.auth_paused_until if s.auth_failing else None),
            ("a 429 throttle", s.throttled_until),
        )
        if until is not None and until > s.now
    ]
    if paused:
        return [
            f"LATENCY BOUND STRETCHED by {' and '.join(paused)}: pending ids are looked at "
            f"later than every {cap} until then"
        ]
    if s.overdue:
        return [
            f"LATENCY BOUND MISSED for {s.overdue} pending ids (due more than {cap} ago): the "
            "rate limit or the workers cannot keep up, or no worker or beat is running"
        ]
    return [f"latency bound: every pending id looked at within {cap} once it may be done"]


def _watch(rt: Runtime, interval: float) -> int:
    """A live view that redraws in place until Ctrl-C (rich handles the terminal)."""
    import time

    from rich.console import Console
    from rich.live import Live

    console = Console()
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                with rt.sessions.begin() as session:
                    s = service_status.summary(session, rt.policy)
                live.update(watch_view(s, rt.settings.rate_limit, rt.settings))
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def watch_view(s: Summary, rate_limit: float, settings: Settings | None = None) -> Any:
    """The ``status --watch`` screen for one summary (a rich renderable; pure, testable)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"pixverse-tracker  {_stamp(s.now)}", show_header=True, expand=False)
    for column in ("pending", "done", "abandoned", "due now", "polls/min", "errors/min"):
        table.add_column(column, justify="right")
    table.add_row(
        str(s.counts["pending"]),
        str(s.counts["done"]),
        str(s.counts["abandoned"]),
        str(s.due_now),
        f"{s.polls_last_5_minutes / 5:.1f}",
        f"{s.errors_last_5_minutes / 5:.1f}",
    )
    parts: list[Any] = [table]
    if s.oldest_pending_id:
        parts.append(
            Text(f"oldest pending: {s.oldest_pending_id} ({_age(s.now, s.oldest_pending_since)})")
        )
    if s.auth_failing:
        parts.append(Text(f"UPSTREAM REJECTS THE TOKEN: {s.auth_error}", style="bold red"))
    if s.throttled_until and s.throttled_until > s.now:
        parts.append(Text(f"throttled by 429 until {_stamp(s.throttled_until)}", style="yellow"))
    if settings is not None:
        parts.append(Text(scheduler_line(s, settings)))
        for line in contract_lines(s, settings):
            held = line.startswith("latency bound:")
            parts.append(Text(line, style="" if held else "bold yellow"))
    parts.append(
        Text(
            f"rate {rate_shown(rate_limit * s.rate_factor)}/s of {rate_limit:g}/s   Ctrl-C to quit"
        )
    )
    return Group(*parts)


def _parse_since(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--since {text!r} is not an ISO-8601 time like 2026-11-29T10:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_list(args: argparse.Namespace) -> int:
    rt = open_runtime(settings_for("list"))
    since = _parse_since(args.since) if args.since else None
    filters: dict[str, Any] = {"state": args.state, "status": args.status, "since": since}
    limit = args.limit or None
    total = None
    with rt.sessions.begin() as session:
        now = current_time(session)
        videos = list_videos(session, **filters, limit=limit)
        if limit is not None and len(videos) == limit:
            total = count_videos(session, **filters)
    if not videos and args.status and not _known_status(args.status):
        raise CommandError(
            f"--status {args.status!r} is not a known status (and no row has it): use a number "
            f"or one of {', '.join(sorted(KNOWN_NAMES))}"
        )
    if total is not None and total > len(videos):
        # On stderr, so the table, JSON or CSV on stdout stays whole for whatever reads it.
        print(f"showing {len(videos):,} of {total:,} (--limit 0 for all)", file=sys.stderr)
    if args.json:
        _print_json([video_dict(v) for v in videos], sys.stdout)
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=PUBLIC_COLUMNS)
        writer.writeheader()
        for v in videos:
            writer.writerow(
                {
                    k: _json_default(x) if isinstance(x, datetime) else x
                    for k, x in video_dict(v).items()
                }
            )
    else:
        render_table(VIDEO_HEADERS, video_rows(videos, now), sys.stdout)
    return EXIT_OK


def _known_status(text: str) -> bool:
    """A status number, or a name the tracker knows (the upstream may send others too)."""
    text = text.strip()
    return text.lstrip("-").isdigit() or text.upper() in KNOWN_NAMES


def cmd_show(args: argparse.Namespace) -> int:
    rt = open_runtime(settings_for("show"))
    with rt.sessions.begin() as session:
        video = get_video(session, args.video_id)
        if video is None:
            raise CommandError(f"{ids.shown(args.video_id)} is not tracked")
        history = events_for(session, args.video_id)
    if args.json:
        data = video_dict(video, with_record=True)
        data["events"] = [
            {
                k: getattr(e, k)
                for k in ("at", "kind", "http_status", "status_code", "status_name", "message")
            }
            for e in history
        ]
        _print_json(data, sys.stdout)
        return EXIT_OK
    out = sys.stdout
    for name, value in video_dict(video).items():
        shown = _stamp(value) if isinstance(value, datetime) else ("-" if value is None else value)
        out.write(f"{name:>20}  {shown}\n")
    out.write("\nhistory:\n")
    for e in history:
        bits = [e.kind]
        if e.status_name or e.status_code is not None:
            bits.append(f"status={e.status_name or e.status_code}")
        if e.http_status:
            bits.append(f"http={e.http_status}")
        if e.message:
            bits.append(e.message)
        out.write(f"  {_stamp(e.at)}  {' '.join(bits)}\n")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    rt = open_runtime(settings_for("prune", (DATABASE, MAINTENANCE)))
    older_than = args.older_than_days * 86400.0 if args.older_than_days is not None else None
    events, minutes, deliveries = maintenance.prune(rt, older_than)
    days = (older_than if older_than is not None else rt.settings.retention) / 86400.0
    print(
        f"removed {events} events, {minutes} poll-count rows and {deliveries} delivered "
        f"callbacks older than {days:g} days"
    )
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    rt = Runtime(settings_for("health", EVERYTHING))
    checks = maintenance.health(rt, broker_timeout=args.timeout)
    if args.json:
        _print_json([vars(c) for c in checks], sys.stdout)
    else:
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def cmd_callbacks(args: argparse.Namespace) -> int:
    from pixverse_tracker.web import serve as web_serve
    from pixverse_tracker.web.receiver_config import from_env

    settings = settings_for("callbacks", (DATABASE, LOGGING))
    config = from_env()
    rt = open_runtime(settings)
    try:
        web_serve.serve(args.host, args.port, rt, config, args.server)
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    finally:
        rt.close()
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from pixverse_tracker.simulator import serve

    try:
        serve(
            args.host,
            args.port,
            args.token,
            args.latency,
            args.default_delay,
            list_shape=args.list_shape,
            list_paging=args.list_paging,
            scheduler_shape=args.scheduler_shape,
        )
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from pixverse_tracker.demo import run_demo

    return run_demo(speed=args.speed)


def _bounded(kind: type[float] | type[int], low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a number within [low, high], else a clear usage error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (low <= value <= high):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        return value

    return parse


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixverse-tracker",
        description="Track useapi.net PixVerse videos until they are final, in a database table.",
        epilog="Settings come from the environment; see README.md for the table.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    add("migrate", cmd_migrate, "create or upgrade the database schema (safe to run again)")

    p = add(
        "enqueue", cmd_enqueue, "start tracking video ids (`-` reads one id per line from stdin)"
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="video ids, or - for stdin")
    p.add_argument(
        "--retrack", action="store_true", help="re-arm ids that are already done or abandoned"
    )
    p.add_argument(
        "--callback-url",
        metavar="URL",
        help="POST each id's row here when it finishes (signed; see docs/webhooks.md)",
    )

    for name, handler, help_ in (
        ("run", cmd_run, "worker and beat in one process (embedded mode, or one machine)"),
        ("worker", cmd_worker, "a Celery worker that polls (needs CELERY_BROKER_URL)"),
        ("beat", cmd_beat, "the Celery beat that schedules dispatch (run exactly one)"),
    ):
        p = add(name, handler, help_)
        p.add_argument(
            "celery_args",
            nargs=argparse.REMAINDER,
            metavar="...",
            help="extra Celery options, after --",
        )

    p = add("status", cmd_status, "counts per state, oldest pending, recent polls, upstream auth")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", help="machine-readable output")
    view.add_argument("--watch", action="store_true", help="a live view, redrawn until Ctrl-C")
    p.add_argument(
        "--interval", type=_bounded(float, 0.2, 3600), default=2.0, help="--watch refresh, s"
    )

    p = add("list", cmd_list, "list tracked videos")
    p.add_argument("--state", choices=["pending", "done", "abandoned"])
    p.add_argument("--status", help="upstream status name or number, e.g. COMPLETED or 1")
    p.add_argument("--since", help="only videos finished (done_at) at or after this ISO-8601 time")
    p.add_argument(
        "--limit",
        type=_bounded(int, 0, 10**9),
        default=100,
        help="at most this many rows (0: all; default 100)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")

    p = add("show", cmd_show, "one video's row and its history")
    p.add_argument("video_id", metavar="ID")
    p.add_argument("--json", action="store_true")

    p = add("prune", cmd_prune, "remove history older than TRACKER_RETENTION (videos stay)")
    p.add_argument(
        "--older-than-days",
        type=_bounded(float, 0.01, 36500),
        help="override TRACKER_RETENTION, in days",
    )

    p = add(
        "health", cmd_health, "exit non-zero if the database, broker or upstream auth is unhealthy"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--timeout",
        type=_bounded(float, 0.1, 600),
        default=5.0,
        help="seconds to wait for the broker",
    )

    p = add(
        "callbacks",
        cmd_callbacks,
        "receive useapi.net replyUrl pushes: each makes its id due now",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_bounded(int, 0, 65535), default=8081, help="default 8081")
    p.add_argument(
        "--server",
        choices=("builtin", "waitress"),
        default="builtin",
        help="builtin (no extra package) or waitress (the `server` extra; for production)",
    )

    p = add("simulate", cmd_simulate, "serve a local fake of the useapi.net endpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_bounded(int, 0, 65535), default=8765)
    p.add_argument("--token", default="sim-token", help="the Bearer token it accepts")
    p.add_argument(
        "--latency", type=_bounded(float, 0, 3600), default=0.0, help="seconds every answer waits"
    )
    p.add_argument(
        "--default-delay",
        type=_bounded(float, 0, 86400),
        default=5.0,
        help="seconds until an untagged id completes",
    )
    p.add_argument(
        "--list-shape",
        choices=("full", "brief"),
        default="full",
        help="list entries are whole records (full) or only the status fields (brief)",
    )
    p.add_argument(
        "--list-paging",
        choices=("plain", "paged"),
        default="plain",
        help="list pages are {data} (plain, as documented) or add has_more/next_offset (paged)",
    )
    p.add_argument(
        "--scheduler-shape",
        choices=("id", "videoId", "video_id"),
        default="id",
        help="the key scheduler items keep their id under: id (as documented), videoId (earlier)"
        " or video_id (as in /scheduler/available)",
    )

    p = add("demo", cmd_demo, "simulator + embedded tracker + live progress, on this machine")
    p.add_argument(
        "--speed",
        type=_bounded(float, 0.01, 1000),
        default=1.0,
        help="run the scenarios this many times faster",
    )
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pixverse-tracker")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    # one line per problem: a SettingsError lists every bad setting at once
    for line in message.splitlines() or [""]:
        print(f"pixverse-tracker: error: {line}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("worker", "beat", "run"):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    if getattr(args, "celery_args", None) and args.celery_args[0] == "--":
        args.celery_args = args.celery_args[1:]
    try:
        return int(args.handler(args))
    except (CommandError, SettingsError, InvalidCallbackUrl) as exc:
        _fail(str(exc))
    except OperationalError as exc:
        _fail(f"cannot use the database: {describe_error(exc)}")
    except ProgrammingError as exc:
        _fail(f"database error (is the schema migrated?): {describe_error(exc)}")
    except SQLAlchemyError as exc:
        _fail(f"database error: {describe_error(exc)}")
    except AlembicError as exc:
        _fail(f"cannot migrate: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # a data folder that is a file, a port in use, ...
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}")


if __name__ == "__main__":
    sys.exit(main())

"""The commands that change or read the tracker: migrate, enqueue, run/worker/beat, list,
show, prune, health, and the servers (push-receiver, simulate, demo)."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pixverse_tracker import api
from pixverse_tracker.cli.context import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    open_runtime,
    settings_for,
)
from pixverse_tracker.cli.render import (
    VIDEO_HEADERS,
    json_default,
    print_json,
    render_table,
    stamp,
    video_dict,
    video_rows,
)
from pixverse_tracker.rules import ids
from pixverse_tracker.rules.columns import LISTED_COLUMNS
from pixverse_tracker.rules.verdict import KNOWN_NAMES
from pixverse_tracker.service import database, maintenance, reading, runtime
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import (
    DATABASE,
    EVERYTHING,
    LOGGING,
    MAINTENANCE,
    RECEIVER,
    Settings,
    SettingsError,
)
from pixverse_tracker.web import metrics as web_metrics


def cmd_migrate(args: argparse.Namespace) -> int:
    done = database.migrate(settings_for("migrate"))
    if done.moved is not None:
        print(
            f"moved revision {done.moved} from {database.LEGACY_VERSION_TABLE} "
            f"to {database.VERSION_TABLE}"
        )
    if done.before == done.after:
        print(f"schema already at revision {done.after}")
    else:
        print(f"schema migrated from {done.before or 'empty'} to {done.after}")
    return EXIT_OK


STDIN_CHUNK = 50_000  # ids validated and stored per round: memory stays flat for any input


def _webhook_url(args: argparse.Namespace) -> str | None:
    """``--webhook-url``, or the deprecated ``--callback-url`` with one line saying so."""
    new: str | None = args.webhook_url
    old: str | None = args.deprecated_callback_url
    if old is None:
        return new
    if new is not None:
        raise CommandError("--callback-url and --webhook-url both given: use --webhook-url only")
    print(DEPRECATED_CALLBACK_URL, file=sys.stderr)
    return old


DEPRECATED_CALLBACK_URL = (
    "pixverse-tracker: warning: --callback-url is deprecated, use --webhook-url (same meaning)"
)


def cmd_enqueue(args: argparse.Namespace) -> int:
    if args.ids == ["-"]:
        numbered: Iterator[tuple[int, str]] = ids.from_lines(sys.stdin)
        where = "line"
    elif "-" in args.ids:
        raise CommandError("`-` (read ids from stdin) must be the only argument")
    else:
        numbered = enumerate(args.ids, start=1)
        where = "argument"
    webhook_url = _webhook_url(args)
    settings = settings_for("enqueue")
    rt: Runtime | None = None
    added = rearmed = unchanged = refused = seen = 0
    # Chunk by chunk, so a million lines on stdin never sit in memory at once; an id repeated
    # across chunks is simply "already tracked" the second time (ON CONFLICT DO NOTHING).
    for chunk in _chunked(numbered, STDIN_CHUNK):
        seen += len(chunk)
        if rt is None and any(ids.problem_with(video_id) is None for _, video_id in chunk):
            rt = open_runtime(settings)
        report = api.enqueue_numbered(chunk, retrack=args.retrack, webhook_url=webhook_url, rt=rt)
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
    listing = reading.list_videos(rt, limit=args.limit or None, **filters)
    now, videos, total = listing.now, listing.videos, listing.total
    if not videos and args.status and not _known_status(args.status):
        raise CommandError(
            f"--status {args.status!r} is not a known status (and no row has it): use a number "
            f"or one of {', '.join(sorted(KNOWN_NAMES))}"
        )
    if total is not None and total > len(videos):
        # On stderr, so the table, JSON or CSV on stdout stays whole for whatever reads it.
        print(f"showing {len(videos):,} of {total:,} (--limit 0 for all)", file=sys.stderr)
    if args.json:
        print_json([video_dict(v) for v in videos], sys.stdout)
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=LISTED_COLUMNS)
        writer.writeheader()
        for v in videos:
            writer.writerow(
                {
                    k: json_default(x) if isinstance(x, datetime) else x
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
    found = reading.video_with_history(rt, args.video_id)
    if found is None:
        raise CommandError(f"{ids.shown(args.video_id)} is not tracked")
    video, history = found
    if args.json:
        data = video_dict(video, with_record=True)
        data["events"] = [
            {
                k: getattr(e, k)
                for k in ("at", "kind", "http_status", "status_code", "status_name", "message")
            }
            for e in history
        ]
        print_json(data, sys.stdout)
        return EXIT_OK
    out = sys.stdout
    for name, value in video_dict(video).items():
        shown = stamp(value) if isinstance(value, datetime) else ("-" if value is None else value)
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
        out.write(f"  {stamp(e.at)}  {' '.join(bits)}\n")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    rt = open_runtime(settings_for("prune", (DATABASE, MAINTENANCE)))
    older_than = args.older_than_days * 86400.0 if args.older_than_days is not None else None
    events, minutes, deliveries = maintenance.prune(rt, older_than)
    days = (older_than if older_than is not None else rt.settings.retention) / 86400.0
    print(
        f"removed {events} events, {minutes} poll-count rows and {deliveries} delivered "
        f"webhooks older than {days:g} days"
    )
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    rt = Runtime(settings_for("health", EVERYTHING))
    checks = maintenance.health(rt, broker_timeout=args.timeout)
    if args.json:
        print_json([vars(c) for c in checks], sys.stdout)
    else:
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def cmd_push_receiver(args: argparse.Namespace) -> int:
    from pixverse_tracker.web import serve as web_serve
    from pixverse_tracker.web.receiver_config import from_settings

    settings = settings_for("push-receiver", (DATABASE, LOGGING, RECEIVER))
    config = from_settings(settings)
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


# The command's name before 0.2, still run, with one line saying so (README "Renamed names").
OLD_PUSH_RECEIVER = "callbacks"


def cmd_callbacks_deprecated(args: argparse.Namespace) -> int:
    """``callbacks``: the old name of ``push-receiver``, hidden from --help."""
    print(
        f"pixverse-tracker: `{OLD_PUSH_RECEIVER}` is deprecated: use `pixverse-tracker "
        "push-receiver` (the old name still works)",
        file=sys.stderr,
        flush=True,
    )
    return cmd_push_receiver(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    from pixverse_tracker.testing.simulator import serve

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
    from pixverse_tracker.cli.demo import run_demo

    return run_demo(speed=args.speed)

"""``pixverse-tracker status``: the tracker's state in a few lines, as JSON, or as a live view."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pixverse_tracker.cli.context import EXIT_OK, open_runtime, settings_for
from pixverse_tracker.cli.render import age, print_json, stamp
from pixverse_tracker.service import status as service_status
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.service.status import Summary
from pixverse_tracker.settings import Settings


def cmd_status(args: argparse.Namespace) -> int:
    rt = open_runtime(settings_for("status"))
    if args.watch:
        return _watch(rt, args.interval)
    with rt.sessions.begin() as session:
        s = service_status.summary(session, rt.policy)
    if args.json:
        print_json({k: getattr(s, k) for k in s.__dataclass_fields__}, sys.stdout)
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
            f"(enqueued {age(s.now, s.oldest_pending_since)} ago)"
        )
    lines.append(
        f"last hour: {s.polls_last_hour} polls, {s.errors_last_hour} errors, "
        f"{s.rate_limited_last_hour} rate-limited, {s.unauthorized_last_hour} unauthorized"
    )
    if s.auth_failing:
        lines.append(
            f"UPSTREAM REJECTS THE TOKEN since {stamp(s.auth_failed_at)}: {s.auth_error}; "
            f"polling paused until {stamp(s.auth_paused_until)} (then one probe at a time)"
        )
    else:
        lines.append(token_line(s, settings))
    if s.throttled_until and s.throttled_until > s.now:
        lines.append(f"throttled by 429 until {stamp(s.throttled_until)}")
    lines.append(
        f"rate: {rate_shown(rate_limit * s.rate_factor)}/s of {rate_limit:g}/s; "
        f"last dispatch {age(s.now, s.last_dispatch_at)} ago"
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
            f"{age(s.now, s.scheduler_read_at)} ago: {s.scheduler_error}); ids fall back to "
            "the list and by-id schedule"
        )
    if s.scheduler_ok_at is None:
        return "scheduler read: none yet (reads start while ids are pending)"
    return (
        f"scheduler read: {age(s.now, s.scheduler_ok_at)} ago, "
        f"{s.scheduler_executing or 0} pending ids executing (no other request needed for them)"
    )


def contract_lines(s: Summary, settings: Settings) -> list[str]:
    """Whether the latency contract holds now, and what stretches it if not."""
    cap = f"{settings.poll_interval_max:g}s"
    paused = [
        f"{what} until {stamp(until)}"
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

    table = Table(title=f"pixverse-tracker  {stamp(s.now)}", show_header=True, expand=False)
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
            Text(f"oldest pending: {s.oldest_pending_id} ({age(s.now, s.oldest_pending_since)})")
        )
    if s.auth_failing:
        parts.append(Text(f"UPSTREAM REJECTS THE TOKEN: {s.auth_error}", style="bold red"))
    if s.throttled_until and s.throttled_until > s.now:
        parts.append(Text(f"throttled by 429 until {stamp(s.throttled_until)}", style="yellow"))
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

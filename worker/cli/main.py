"""The ``pixverse-tracker`` command line: the parser, and ``main``, which turns every expected
failure into one line per problem (never a traceback)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from alembic.util import CommandError as AlembicError
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from pixverse_tracker.cli.commands import (
    OLD_PUSH_RECEIVER,
    cmd_beat,
    cmd_callbacks_deprecated,
    cmd_demo,
    cmd_enqueue,
    cmd_health,
    cmd_list,
    cmd_migrate,
    cmd_prune,
    cmd_push_receiver,
    cmd_run,
    cmd_show,
    cmd_simulate,
    cmd_worker,
)
from pixverse_tracker.cli.context import EXIT_FAILED, EXIT_OK, CommandError
from pixverse_tracker.cli.status import cmd_status
from pixverse_tracker.rules.webhooks import InvalidWebhookUrl
from pixverse_tracker.service.database import describe_error
from pixverse_tracker.settings import SettingsError


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


# Adds one subcommand with its handler: (name, handler, help) -> its parser.
Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


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

    # in the order `--help` lists them
    _tracking_commands(add)
    _reading_commands(add)
    _upkeep_commands(add)
    _tool_commands(add)
    # `callbacks`, push-receiver's name before 0.2: still runs, saying so; no help= keeps it
    # out of the list of commands.
    old = sub.add_parser(
        OLD_PUSH_RECEIVER,
        description="deprecated: the old name of `push-receiver` (use that instead)",
    )
    old.set_defaults(handler=cmd_callbacks_deprecated)
    _push_receiver_arguments(old)
    return parser


def _tracking_commands(add: Add) -> None:
    """migrate, enqueue, and the processes that track: run, worker, beat."""
    add("migrate", cmd_migrate, "create or upgrade the database schema (safe to run again)")

    p = add(
        "enqueue", cmd_enqueue, "start tracking video ids (`-` reads one id per line from stdin)"
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="video ids, or - for stdin")
    p.add_argument(
        "--retrack", action="store_true", help="re-arm ids that are already done or abandoned"
    )
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="POST each id's row here when it finishes (signed; see docs/webhooks.md)",
    )
    # The flag's name before 0.2, still accepted: cmd_enqueue prints a deprecation line.
    p.add_argument("--callback-url", dest="deprecated_callback_url", help=argparse.SUPPRESS)

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


def _reading_commands(add: Add) -> None:
    """status, list, show."""
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


def _upkeep_commands(add: Add) -> None:
    """prune, health, and the receiver of useapi.net's pushes."""
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
        "push-receiver",
        cmd_push_receiver,
        "receive useapi.net replyUrl pushes: each makes its id due now",
    )
    _push_receiver_arguments(p)


def _push_receiver_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_bounded(int, 0, 65535), default=8081, help="default 8081")
    p.add_argument(
        "--server",
        choices=("builtin", "waitress"),
        default="builtin",
        help="builtin (no extra package) or waitress (the `server` extra; for production)",
    )


def _tool_commands(add: Add) -> None:
    """The simulator of useapi.net, and the demo built on it."""
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
    except (CommandError, SettingsError, InvalidWebhookUrl) as exc:
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

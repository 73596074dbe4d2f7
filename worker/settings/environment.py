"""Reading the environment one concern at a time (database, broker, upstream, polling, logging,
metrics, webhooks, maintenance, the receiver), collecting every problem instead of stopping at
the first.

``load(needs=...)`` reports every problem in the concerns a command uses, one line each, and
gives a concern it does not use its defaults instead of refusing over it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from pixverse_tracker.settings.parsing import (
    LOG_FORMATS,
    SCHEDULES,
    T,
    byte_count_in,
    float_in,
    parse_base_url,
    parse_bool,
    parse_choice,
    parse_database_url,
    parse_db_schema,
    parse_log_level,
    parse_number,
    parse_push_secret,
    parse_queue_prefix,
    parse_webhook_allowlist,
    parse_webhook_secret,
    parse_webhook_url,
    stripped_number,
)
from pixverse_tracker.settings.renamed import lookup as renamed_lookup
from pixverse_tracker.settings.values import (
    DEFAULT_BASE_URL,
    EMBEDDED_BROKER_URL,
    EMBEDDED_DATABASE_FILE,
    PUSH_BODY_TIMEOUT,
    PUSH_HEADER_TIMEOUT,
    PUSH_MAX_BYTES,
    PUSH_MAX_CONNECTIONS,
    PUSH_SECRET_VARIABLE,
    Secret,
    Settings,
    SettingsError,
)


class _Reader:
    """Reads the variables of one concern, noting every problem instead of stopping at the first.

    A variable that is unset or blank takes its default; one that cannot be parsed is noted and
    takes its default too, so the values derived from it are still computed (and checked).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def lookup(self, name: str) -> tuple[str, str | None]:
        """The name the value was set under (an old name of ``name``, renamed.py) and the
        value, None when unset or blank."""
        used, value, problem = renamed_lookup(self.env, name)
        if problem is not None:
            self.problems.append(problem)
        return used, value

    def raw(self, name: str) -> str | None:
        return self.lookup(name)[1]

    def read(self, name: str, default: T, parse: Callable[[str, str], T]) -> T:
        used, raw = self.lookup(name)
        if raw is None:
            return default
        try:
            return parse(used, raw)  # its message names the variable that was set
        except SettingsError as exc:
            self.problems.append(str(exc))
            return default

    def set_seconds(self, name: str, low: float, high: float) -> float | None:
        """The value the user set, or None when unset or unusable (the caller derives one)."""
        return self.read(name, None, float_in(low, high))

    def number(self, name: str, default: float, low: float, high: float) -> float:
        return self.read(name, default, float_in(low, high))

    def seconds(self, name: str, default: float, low: float = 0, high: float = 30 * 86400) -> float:
        return self.number(name, default, low, high)

    def whole(self, name: str, default: int, low: int, high: int) -> int:
        return self.read(name, default, lambda n, raw: parse_number(n, raw, int, low, high))

    def flag(self, name: str, default: bool) -> bool:
        return self.read(name, default, parse_bool)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        return self.read(name, default, lambda n, raw: parse_choice(n, raw, choices))


# Each concern is read by one function returning its Settings attributes; a new setting is one
# line in its concern. A command names the concerns it uses (cli/commands.py) and is refused only
# over those: a poll setting never stops `enqueue`, `status` or `migrate`.
DATABASE = "database"  # DATABASE_URL, TRACKER_DATA_DIR
BROKER = "broker"  # CELERY_BROKER_URL, TRACKER_QUEUE_PREFIX
UPSTREAM = "upstream"  # USEAPI_TOKEN, USEAPI_BASE_URL, HTTP timeouts and body size
POLLING = "polling"  # when, how fast and how many: intervals, rate, batches, list, scheduler
LOGGING = "logging"
METRICS = "metrics"
WEBHOOKS = "webhooks"
MAINTENANCE = "maintenance"  # retention and pruning
# TRACKER_PUSH_*: the push receiver's own (the old TRACKER_CALLBACK_* names too, renamed.py). Not
# in EVERYTHING: only the receiver (`push-receiver`, web.receiver's WSGI app) checks them, so a
# bad one never stops a worker.
RECEIVER = "receiver"


def _database(r: _Reader) -> dict[str, Any]:
    data_dir = Path(r.read("TRACKER_DATA_DIR", ".pixverse-tracker", lambda _, raw: raw))
    data_dir = data_dir.expanduser()
    url = r.read("DATABASE_URL", None, parse_database_url)
    database_url = url or f"sqlite:///{(data_dir / EMBEDDED_DATABASE_FILE).as_posix()}"
    return dict(
        data_dir=data_dir,
        database_url=database_url,
        db_schema=r.read(
            "TRACKER_DB_SCHEMA", None, lambda _, raw: parse_db_schema(raw, database_url)
        ),
        embedded_database=r.raw("DATABASE_URL") is None,
    )


def _broker(r: _Reader) -> dict[str, Any]:
    return dict(
        broker_url=(r.raw("CELERY_BROKER_URL") or "").strip() or EMBEDDED_BROKER_URL,
        queue_prefix=r.read("TRACKER_QUEUE_PREFIX", "tracker", parse_queue_prefix),
        # Celery's remote control and events: off, see README "Celery's own tools" for why.
        celery_control=r.flag("TRACKER_CELERY_CONTROL", False),
    )


def _upstream(r: _Reader) -> dict[str, Any]:
    insecure = r.flag("TRACKER_ALLOW_INSECURE_UPSTREAM", False)
    return dict(
        useapi_token=Secret((r.raw("USEAPI_TOKEN") or "").strip()),
        useapi_base_url=r.read(
            "USEAPI_BASE_URL", DEFAULT_BASE_URL, lambda _, raw: parse_base_url(raw, insecure)
        ),
        allow_insecure_upstream=insecure,
        http_connect_timeout=r.seconds("TRACKER_HTTP_CONNECT_TIMEOUT", 5.0, 0.05, 300),
        http_timeout=r.seconds("TRACKER_HTTP_TIMEOUT", 20.0, 0.05, 600),
        max_body_bytes=r.whole("TRACKER_MAX_BODY_BYTES", 1_048_576, 1024, 512 * 1_048_576),
    )


def _polling(r: _Reader) -> dict[str, Any]:
    list_enabled = r.flag("TRACKER_LIST", True)
    notices = []
    if r.raw("TRACKER_LEASE") is not None:
        notices.append(
            "TRACKER_LEASE is no longer used and is ignored: a claim now lasts each request's "
            "own slot plus TRACKER_DISPATCH_INTERVAL and the HTTP timeouts"
        )
    return dict(
        _intervals(r, list_enabled),
        dispatch_interval=r.seconds("TRACKER_DISPATCH_INTERVAL", 5.0, 0.1, 3600),
        first_poll_delay=r.seconds("TRACKER_FIRST_POLL_DELAY", 15.0, 0, 86400),
        poll_jitter=r.number("TRACKER_POLL_JITTER", 0.2, 0, 0.9),
        give_up_after=r.seconds("TRACKER_GIVE_UP_AFTER", 6 * 3600.0, 1, 365 * 86400.0),
        slow_after=r.seconds("TRACKER_SLOW_AFTER", 1800.0, 0, 365 * 86400.0),
        rate_limit=r.number("TRACKER_RATE_LIMIT", 5.0, 0.01, 10000),
        batch_size=r.whole("TRACKER_BATCH_SIZE", 25, 1, 10000),
        poll_concurrency=r.whole("TRACKER_POLL_CONCURRENCY", 8, 1, 256),
        worker_concurrency=r.whole("TRACKER_WORKER_CONCURRENCY", 4, 1, 256),
        auth_pause=r.seconds("TRACKER_AUTH_PAUSE", 60.0, 0.1, 86400),
        rate_limit_pause=r.seconds("TRACKER_RATE_LIMIT_PAUSE", 15.0, 0.1, 3600),
        rate_recovery=r.seconds("TRACKER_RATE_RECOVERY", 60.0, 0.1, 86400),
        schedule=r.choice("TRACKER_SCHEDULE", "adaptive", SCHEDULES),
        list_enabled=list_enabled,
        list_page_size=r.whole("TRACKER_LIST_PAGE_SIZE", 40, 1, 100),
        list_max_pages=r.whole("TRACKER_LIST_MAX_PAGES", 3, 1, 50),
        list_retry=r.seconds("TRACKER_LIST_RETRY", 3600.0, 0),
        typical_duration=r.seconds("TRACKER_TYPICAL_DURATION", 90.0, 1, 86400),
        scheduler_enabled=r.flag("TRACKER_SCHEDULER", True),
        scheduler_interval=r.seconds("TRACKER_SCHEDULER_INTERVAL", 3.0, 0.5, 3600),
        notices=tuple(notices),
    )


# The defaults of the latency bound and of the intervals that must fit around it.
POLL_INTERVAL_MAX, POLL_INTERVAL_MIN, LIST_INTERVAL, SLOW_INTERVAL = 15.0, 15.0, 10.0, 300.0


def _intervals(r: _Reader, list_enabled: bool) -> dict[str, float]:
    """The latency bound TRACKER_POLL_INTERVAL_MAX and the intervals around it: the minimum and
    the list interval (while the list is on) at most the bound, the slow interval at least it.

    A value the user set is kept and the defaults move to fit it; values the user set that do
    not fit each other are reported, one line per pair, naming both.
    """
    cap = r.set_seconds("TRACKER_POLL_INTERVAL_MAX", 0.1, 86400)
    low = r.set_seconds("TRACKER_POLL_INTERVAL_MIN", 0.1, 86400)
    grid = r.set_seconds("TRACKER_LIST_INTERVAL", 0.1, 3600)
    slow = r.set_seconds("TRACKER_SLOW_INTERVAL", 0.1, 86400)
    below = {
        "TRACKER_POLL_INTERVAL_MIN": low,
        "TRACKER_LIST_INTERVAL": grid if list_enabled else None,
    }
    under = {name: value for name, value in below.items() if value is not None}
    if cap is None:
        floor = max(under.values(), default=0.0)
        ceiling = math.inf if slow is None else slow
        cap = min(max(POLL_INTERVAL_MAX, floor), ceiling) if floor <= ceiling else floor
        for name, value in under.items():
            if slow is not None and value > slow:
                r.problems.append(
                    f"{name} ({value:g}) is longer than TRACKER_SLOW_INTERVAL ({slow:g}): the "
                    "latency bound TRACKER_POLL_INTERVAL_MAX would have to lie between them"
                )
    else:
        if low is not None and low > cap:
            r.problems.append(
                f"TRACKER_POLL_INTERVAL_MIN ({low:g}) is larger than "
                f"TRACKER_POLL_INTERVAL_MAX ({cap:g})"
            )
        if list_enabled and grid is not None and grid > cap:
            r.problems.append(
                f"TRACKER_LIST_INTERVAL ({grid:g}) is longer than TRACKER_POLL_INTERVAL_MAX "
                f"({cap:g}): ids read through the list would be looked at less often than the "
                "latency bound allows; lower it, or set TRACKER_LIST=false"
            )
        if slow is not None and slow < cap:
            r.problems.append(
                f"TRACKER_SLOW_INTERVAL ({slow:g}) is shorter than TRACKER_POLL_INTERVAL_MAX "
                f"({cap:g}): old videos would be polled more often than young ones"
            )
    return dict(
        poll_interval_max=cap,
        poll_interval_min=min(POLL_INTERVAL_MIN, cap) if low is None else low,
        list_interval=min(LIST_INTERVAL, cap) if grid is None else grid,
        slow_interval=max(SLOW_INTERVAL, cap) if slow is None else slow,
    )


def _logging(r: _Reader) -> dict[str, Any]:
    return dict(
        log_level=r.read("TRACKER_LOG_LEVEL", "INFO", parse_log_level),
        log_format=r.choice("TRACKER_LOG_FORMAT", "auto", LOG_FORMATS),
    )


def _metrics(r: _Reader) -> dict[str, Any]:
    return dict(
        metrics_port=r.whole("TRACKER_METRICS_PORT", 9808, 0, 65535),
        beat_metrics_port=r.whole("TRACKER_BEAT_METRICS_PORT", 9809, 0, 65535),
    )


def _webhooks(r: _Reader) -> dict[str, Any]:
    return dict(
        webhook_url=r.read("TRACKER_WEBHOOK_URL", None, parse_webhook_url),
        webhook_secret=r.read(
            "TRACKER_WEBHOOK_SECRET", Secret(""), lambda _, raw: parse_webhook_secret(raw)
        ),
        webhook_max_attempts=r.whole("TRACKER_WEBHOOK_MAX_ATTEMPTS", 15, 1, 100),
        webhook_timeout=r.seconds("TRACKER_WEBHOOK_TIMEOUT", 10.0, 0.1, 300),
        webhook_allow_private=r.flag("TRACKER_WEBHOOK_ALLOW_PRIVATE", False),
        webhook_allowlist=r.read(
            "TRACKER_WEBHOOK_ALLOWLIST", "", lambda _, raw: parse_webhook_allowlist(raw)
        ),
        webhook_concurrency=r.whole("TRACKER_WEBHOOK_CONCURRENCY", 4, 1, 64),
    )


def _maintenance(r: _Reader) -> dict[str, Any]:
    return dict(
        retention=r.seconds("TRACKER_RETENTION", 30 * 86400.0, 3600, 3650 * 86400.0),
        prune_interval=r.seconds("TRACKER_PRUNE_INTERVAL", 3600.0, 0),
    )


def _receiver(r: _Reader) -> dict[str, Any]:
    # An unset secret is no problem here (Settings.require_push_secret refuses it where the
    # receiver runs); one that is set must be usable.
    return dict(
        push_secret=r.read(PUSH_SECRET_VARIABLE, Secret(""), parse_push_secret),
        push_max_bytes=r.read(
            "TRACKER_PUSH_MAX_BYTES", PUSH_MAX_BYTES, byte_count_in(1024, 16 * 1_048_576)
        ),
        push_max_connections=r.read(
            "TRACKER_PUSH_MAX_CONNECTIONS",
            PUSH_MAX_CONNECTIONS,
            stripped_number(int, 1, 100_000),
        ),
        push_header_timeout=r.read(
            "TRACKER_PUSH_HEADER_TIMEOUT",
            PUSH_HEADER_TIMEOUT,
            stripped_number(float, 1, 600),
        ),
        push_body_timeout=r.read(
            "TRACKER_PUSH_BODY_TIMEOUT", PUSH_BODY_TIMEOUT, stripped_number(float, 1, 3600)
        ),
    )


CONCERNS: dict[str, Callable[[_Reader], dict[str, Any]]] = {
    DATABASE: _database,
    BROKER: _broker,
    UPSTREAM: _upstream,
    POLLING: _polling,
    LOGGING: _logging,
    METRICS: _metrics,
    WEBHOOKS: _webhooks,
    MAINTENANCE: _maintenance,
    RECEIVER: _receiver,
}

# What the tracker's own processes check (worker, beat, run, health): every concern but the
# receiver's.
EVERYTHING = frozenset(CONCERNS) - {RECEIVER}


def load(
    environ: Mapping[str, str] | None = None, *, needs: Collection[str] = EVERYTHING
) -> Settings:
    """Read every setting. Problems in the concerns ``needs`` names raise one SettingsError with
    one line per problem; a concern not needed that has problems takes its defaults instead."""
    env = os.environ if environ is None else environ
    unknown = set(needs) - set(CONCERNS)
    if unknown:
        raise ValueError(f"unknown settings concerns: {sorted(unknown)}")
    values: dict[str, Any] = {}
    problems: list[str] = []
    for concern, read in CONCERNS.items():
        reader = _Reader(env)
        part = read(reader)
        if reader.problems:
            if concern in needs:
                problems.extend(reader.problems)
            else:
                part = read(_Reader({}))
        values.update(part)
    if problems:
        raise SettingsError("\n".join(problems))
    return Settings(**values)

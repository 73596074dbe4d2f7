"""One frozen settings object, read from the environment and validated once.

Settings are grouped by concern (the database, the upstream, polling, ...). ``load(needs=...)``
reports every problem in the concerns a command uses, one line each, and gives a concern it
does not use its defaults instead of refusing over it.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pixverse_tracker.rules.addresses import parse_allowlist
from pixverse_tracker.rules.webhooks import (
    InvalidCallbackUrl,
    InvalidSecret,
    shown_url,
    signing_key,
    validate_url,
)

DEFAULT_BASE_URL = "https://api.useapi.net"
EMBEDDED_BROKER_URL = "memory://"
EMBEDDED_DATABASE_FILE = "tracker.db"  # under TRACKER_DATA_DIR

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting in the environment has a value the tracker cannot use."""


class Secret:
    """A string that never shows itself in repr(), str() or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything the tracker can be told, with the defaults documented in README.md."""

    useapi_token: Secret
    useapi_base_url: str
    allow_insecure_upstream: bool
    database_url: str
    db_schema: str | None
    broker_url: str
    data_dir: Path
    dispatch_interval: float
    first_poll_delay: float
    poll_interval_min: float
    poll_interval_max: float
    poll_jitter: float
    slow_after: float
    slow_interval: float
    give_up_after: float
    rate_limit: float
    http_connect_timeout: float
    http_timeout: float
    max_body_bytes: int
    batch_size: int
    poll_concurrency: int
    worker_concurrency: int
    auth_pause: float
    rate_limit_pause: float
    rate_recovery: float
    log_level: str
    queue_prefix: str
    log_format: str
    retention: float
    prune_interval: float
    metrics_port: int
    beat_metrics_port: int
    webhook_url: str | None
    webhook_secret: Secret
    webhook_max_attempts: int
    webhook_timeout: float
    webhook_allow_private: bool
    webhook_allowlist: str
    webhook_concurrency: int
    schedule: str
    list_enabled: bool
    list_interval: float
    list_page_size: int
    list_max_pages: int
    list_retry: float
    typical_duration: float
    scheduler_enabled: bool
    scheduler_interval: float
    celery_control: bool
    # Lines for the operator about settings that are accepted but no longer do anything.
    notices: tuple[str, ...] = ()
    # True when DATABASE_URL is not set: database_url is then the embedded SQLite file, which
    # only `run` and `demo` may create (anything else must not write to a stray file).
    embedded_database: bool = False

    def __repr__(self) -> str:
        # The token is a Secret already; URLs may carry passwords, so mask those too.
        shown = ", ".join(
            f"{name}={_shown_setting(name, value)!r}" for name, value in vars(self).items()
        )
        return f"Settings({shown})"

    __str__ = __repr__

    @property
    def embedded(self) -> bool:
        """True when neither a database nor a broker was configured: SQLite + in-process broker."""
        return self.broker_url == EMBEDDED_BROKER_URL

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def embedded_database_path(self) -> Path:
        """The embedded SQLite file, used when DATABASE_URL is not set."""
        return self.data_dir / EMBEDDED_DATABASE_FILE

    @property
    def request_budget(self) -> float:
        """The longest one upstream request can take: the client ends every request, body
        included, within the connect plus the read timeout."""
        return self.http_connect_timeout + self.http_timeout

    @property
    def lease(self) -> float:
        """How long a claim on an id lasts past its request's slot: the request itself, plus
        one dispatch interval for the poll message to reach a worker that is busy.

        A worker that dies holding an id therefore delays it by this much at most: the lease
        runs out, the id is due again, and the next dispatch claims it (docs/architecture.md).
        """
        return self.dispatch_interval + self.request_budget

    @property
    def task_time_limit(self) -> float:
        """Hard limit for one poll task: its slots (one dispatch interval), then a chain of
        requests each learned from the one before (list pages, then a fetch by id). Leases are
        renewed along the chain, so this only stops a task that is stuck."""
        from pixverse_tracker.rules.listing import MAX_CHAIN_PAGES

        # the deepest list read, and a fetch by id after it
        return self.dispatch_interval + (MAX_CHAIN_PAGES + 2) * self.request_budget + 5.0

    def require_token(self) -> str:
        """The token, or a clear error naming the variable when it is missing."""
        if not self.useapi_token:
            raise SettingsError(
                "USEAPI_TOKEN is not set: the tracker cannot poll useapi.net without it"
            )
        return self.useapi_token.reveal()

    def require_database(self) -> str:
        """The database URL, or a clear error when DATABASE_URL is not set: outside `run` and
        `demo` the embedded default would be a file no worker reads."""
        if self.embedded_database:
            raise SettingsError(
                "DATABASE_URL is not set: name the tracker's database (postgresql://user@host/db, "
                f"or sqlite:///{self.embedded_database_path.as_posix()} for the embedded one "
                "that `pixverse-tracker run` uses)"
            )
        return self.database_url


# --- parsing helpers: each names the variable in its error ------------------------------------


def _shown_setting(name: str, value: Any) -> Any:
    if name == "webhook_url" and value:
        return shown_url(value)  # its query string may carry the application's own token
    return mask_password(value) if name.endswith("_url") else value


def _number(name: str, raw: str, cast: Callable[[str], T], low: float, high: float) -> T:
    try:
        value = cast(raw.strip())
    except ValueError:
        kind = "a whole number" if cast is int else "a number"
        raise SettingsError(f"{name}={raw!r} is not {kind}") from None
    if not (low <= float(value) <= high):  # type: ignore[arg-type]
        raise SettingsError(
            f"{name}={raw!r} is out of range: it must be between {low:g} and {high:g}"
        )
    return value


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean: use true or false")


def mask_password(url: str) -> str:
    """``scheme://user:********@host/...``: a URL fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":********@", 1)
            url = parts._replace(netloc=netloc).geturl()
    except ValueError:
        return "(unparseable URL)"
    return url


def normalize_database_url(url: str) -> str:
    """Pin Postgres URLs to psycopg2, our driver.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which we do not ship; users
    write the usual ``postgresql://user@host/db`` (or Heroku-style ``postgres://``).
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def _database_url(_name: str, raw: str) -> str:
    url = normalize_database_url(raw.strip())
    if not (url.startswith("postgresql+psycopg2://") or url.startswith("sqlite")):
        scheme = url.split(":", 1)[0] or "(empty)"
        raise SettingsError(
            f"DATABASE_URL uses {scheme!r}: use postgresql://user@host/db or sqlite:///path.db"
        )
    return url


def _db_schema(raw: str, database_url: str) -> str | None:
    """The Postgres schema for the tracker's objects, or None for the role's default."""
    name = raw.strip()
    if not name:
        return None
    if database_url.startswith("sqlite"):
        raise SettingsError(
            "TRACKER_DB_SCHEMA is for Postgres and DATABASE_URL is SQLite, which has no schemas"
        )
    # Lowercase only: the name is quoted in SQL, and an application that writes it unquoted
    # (tracker.videos) gets Postgres's folded lowercase name, so both spell the same schema.
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or name.startswith("pg_"):
        raise SettingsError(
            f"TRACKER_DB_SCHEMA={raw!r} must be 1-63 lowercase letters, digits or '_', "
            "not starting with a digit or 'pg_'"
        )
    return name


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(raw: str, allow_insecure: bool) -> str:
    url = raw.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise SettingsError(f"USEAPI_BASE_URL={raw!r} is not a valid URL: {exc}") from None
    if parts.scheme not in {"http", "https"} or not host:
        raise SettingsError(f"USEAPI_BASE_URL={raw!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise SettingsError(f"USEAPI_BASE_URL={raw!r} must not have a query or fragment")
    # The token travels in a header: refuse to send it in clear to anything but this machine.
    if parts.scheme == "http" and not _is_loopback(host) and not allow_insecure:
        raise SettingsError(
            f"USEAPI_BASE_URL={raw!r} is plain http to a remote host, which would send the token "
            "in clear; use https, or set TRACKER_ALLOW_INSECURE_UPSTREAM=true if you really mean it"
        )
    return url


LOG_FORMATS = ("auto", "json", "text")
SCHEDULES = ("adaptive", "backoff")


def _webhook_url(_name: str, raw: str) -> str | None:
    try:
        return validate_url(raw)
    except InvalidCallbackUrl as exc:
        raise SettingsError(f"TRACKER_WEBHOOK_URL: {exc}") from None


def _webhook_secret(raw: str) -> Secret:
    secret = raw.strip()
    try:
        signing_key(secret)
    except InvalidSecret as exc:
        raise SettingsError(f"TRACKER_WEBHOOK_SECRET: {exc}") from None
    return Secret(secret)


def _webhook_allowlist(raw: str) -> str:
    try:
        parse_allowlist(raw)
    except ValueError as exc:
        raise SettingsError(f"TRACKER_WEBHOOK_ALLOWLIST: {exc}") from None
    return raw.strip()


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return value


def _queue_prefix(_name: str, raw: str) -> str:
    prefix = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", prefix):
        raise SettingsError(
            f"TRACKER_QUEUE_PREFIX={raw!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return prefix


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"{name}={level!r} is not a log level")
    return level


def _float_in(low: float, high: float) -> Callable[[str, str], float]:
    return lambda name, raw: _number(name, raw, float, low, high)


# --- reading the environment, one concern at a time ---------------------------------------------


class _Reader:
    """Reads the variables of one concern, noting every problem instead of stopping at the first.

    A variable that is unset or blank takes its default; one that cannot be parsed is noted and
    takes its default too, so the values derived from it are still computed (and checked).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or not value.strip() else value

    def read(self, name: str, default: T, parse: Callable[[str, str], T]) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return parse(name, raw)
        except SettingsError as exc:
            self.problems.append(str(exc))
            return default

    def set_seconds(self, name: str, low: float, high: float) -> float | None:
        """The value the user set, or None when unset or unusable (the caller derives one)."""
        return self.read(name, None, _float_in(low, high))

    def number(self, name: str, default: float, low: float, high: float) -> float:
        return self.read(name, default, _float_in(low, high))

    def seconds(self, name: str, default: float, low: float = 0, high: float = 30 * 86400) -> float:
        return self.number(name, default, low, high)

    def whole(self, name: str, default: int, low: int, high: int) -> int:
        return self.read(name, default, lambda n, raw: _number(n, raw, int, low, high))

    def flag(self, name: str, default: bool) -> bool:
        return self.read(name, default, _bool)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        return self.read(name, default, lambda n, raw: _choice(n, raw, choices))


# Each concern is read by one function returning its Settings attributes; a new setting is one
# line in its concern. A command names the concerns it uses (worker/cli.py) and is refused only
# over those: a poll setting never stops `enqueue`, `status` or `migrate`.
DATABASE = "database"  # DATABASE_URL, TRACKER_DATA_DIR
BROKER = "broker"  # CELERY_BROKER_URL, TRACKER_QUEUE_PREFIX
UPSTREAM = "upstream"  # USEAPI_TOKEN, USEAPI_BASE_URL, HTTP timeouts and body size
POLLING = "polling"  # when, how fast and how many: intervals, rate, batches, list, scheduler
LOGGING = "logging"
METRICS = "metrics"
WEBHOOKS = "webhooks"
MAINTENANCE = "maintenance"  # retention and pruning


def _database(r: _Reader) -> dict[str, Any]:
    data_dir = Path(r.read("TRACKER_DATA_DIR", ".pixverse-tracker", lambda _, raw: raw))
    data_dir = data_dir.expanduser()
    url = r.read("DATABASE_URL", None, _database_url)
    database_url = url or f"sqlite:///{(data_dir / EMBEDDED_DATABASE_FILE).as_posix()}"
    return dict(
        data_dir=data_dir,
        database_url=database_url,
        db_schema=r.read("TRACKER_DB_SCHEMA", None, lambda _, raw: _db_schema(raw, database_url)),
        embedded_database=r.raw("DATABASE_URL") is None,
    )


def _broker(r: _Reader) -> dict[str, Any]:
    return dict(
        broker_url=(r.raw("CELERY_BROKER_URL") or "").strip() or EMBEDDED_BROKER_URL,
        queue_prefix=r.read("TRACKER_QUEUE_PREFIX", "tracker", _queue_prefix),
        # Celery's remote control and events: off, see README "Celery's own tools" for why.
        celery_control=r.flag("TRACKER_CELERY_CONTROL", False),
    )


def _upstream(r: _Reader) -> dict[str, Any]:
    insecure = r.flag("TRACKER_ALLOW_INSECURE_UPSTREAM", False)
    return dict(
        useapi_token=Secret((r.raw("USEAPI_TOKEN") or "").strip()),
        useapi_base_url=r.read(
            "USEAPI_BASE_URL", DEFAULT_BASE_URL, lambda _, raw: _base_url(raw, insecure)
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
        log_level=r.read("TRACKER_LOG_LEVEL", "INFO", _log_level),
        log_format=r.choice("TRACKER_LOG_FORMAT", "auto", LOG_FORMATS),
    )


def _metrics(r: _Reader) -> dict[str, Any]:
    return dict(
        metrics_port=r.whole("TRACKER_METRICS_PORT", 9808, 0, 65535),
        beat_metrics_port=r.whole("TRACKER_BEAT_METRICS_PORT", 9809, 0, 65535),
    )


def _webhooks(r: _Reader) -> dict[str, Any]:
    return dict(
        webhook_url=r.read("TRACKER_WEBHOOK_URL", None, _webhook_url),
        webhook_secret=r.read(
            "TRACKER_WEBHOOK_SECRET", Secret(""), lambda _, raw: _webhook_secret(raw)
        ),
        webhook_max_attempts=r.whole("TRACKER_WEBHOOK_MAX_ATTEMPTS", 15, 1, 100),
        webhook_timeout=r.seconds("TRACKER_WEBHOOK_TIMEOUT", 10.0, 0.1, 300),
        webhook_allow_private=r.flag("TRACKER_WEBHOOK_ALLOW_PRIVATE", False),
        webhook_allowlist=r.read(
            "TRACKER_WEBHOOK_ALLOWLIST", "", lambda _, raw: _webhook_allowlist(raw)
        ),
        webhook_concurrency=r.whole("TRACKER_WEBHOOK_CONCURRENCY", 4, 1, 64),
    )


def _maintenance(r: _Reader) -> dict[str, Any]:
    return dict(
        retention=r.seconds("TRACKER_RETENTION", 30 * 86400.0, 3600, 3650 * 86400.0),
        prune_interval=r.seconds("TRACKER_PRUNE_INTERVAL", 3600.0, 0),
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
}
EVERYTHING = frozenset(CONCERNS)


def load(
    environ: Mapping[str, str] | None = None, *, needs: Collection[str] = EVERYTHING
) -> Settings:
    """Read every setting. Problems in the concerns ``needs`` names raise one SettingsError with
    one line per problem; a concern not needed that has problems takes its defaults instead."""
    env = os.environ if environ is None else environ
    unknown = set(needs) - EVERYTHING
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

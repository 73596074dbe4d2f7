"""One frozen settings object, read from the environment and validated once."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from worker.addresses import parse_allowlist
from worker.webhooks import InvalidCallbackUrl, InvalidSecret, shown_url, signing_key, validate_url

DEFAULT_BASE_URL = "https://api.useapi.net"
EMBEDDED_BROKER_URL = "memory://"

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
    # Lines for the operator about settings that are accepted but no longer do anything.
    notices: tuple[str, ...] = ()

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
        from worker.listing import MAX_CHAIN_PAGES  # the rules module, not loaded by settings

        # the deepest list read, and a fetch by id after it
        return self.dispatch_interval + (MAX_CHAIN_PAGES + 2) * self.request_budget + 5.0

    def require_token(self) -> str:
        """The token, or a clear error naming the variable when it is missing."""
        if not self.useapi_token:
            raise SettingsError(
                "USEAPI_TOKEN is not set: the tracker cannot poll useapi.net without it"
            )
        return self.useapi_token.reveal()


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


def _database_url(raw: str) -> str:
    url = normalize_database_url(raw.strip())
    if not (url.startswith("postgresql+psycopg2://") or url.startswith("sqlite")):
        scheme = url.split(":", 1)[0] or "(empty)"
        raise SettingsError(
            f"DATABASE_URL uses {scheme!r}: use postgresql://user@host/db or sqlite:///path.db"
        )
    return url


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


def _webhook_url(raw: str) -> str | None:
    if not raw.strip():
        return None
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


def _queue_prefix(raw: str) -> str:
    prefix = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", prefix):
        raise SettingsError(
            f"TRACKER_QUEUE_PREFIX={raw!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return prefix


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raises SettingsError naming the first bad variable."""
    env = os.environ if environ is None else environ

    def get(name: str, default: str) -> str:
        value = env.get(name)
        return default if value is None or value.strip() == "" else value

    def seconds(name: str, default: float, low: float = 0.0, high: float = 30 * 86400.0) -> float:
        return _number(name, get(name, repr(default)), float, low, high)

    def given(name: str) -> bool:
        return get(name, "") != ""

    def whole(name: str, default: int, low: int, high: int) -> int:
        return _number(name, get(name, str(default)), int, low, high)

    data_dir = Path(get("TRACKER_DATA_DIR", ".pixverse-tracker")).expanduser()
    raw_db = env.get("DATABASE_URL", "").strip()
    raw_broker = env.get("CELERY_BROKER_URL", "").strip()
    database_url = (
        _database_url(raw_db) if raw_db else f"sqlite:///{(data_dir / 'tracker.db').as_posix()}"
    )
    broker_url = raw_broker or EMBEDDED_BROKER_URL
    insecure = _bool("TRACKER_ALLOW_INSECURE_UPSTREAM", get("TRACKER_ALLOW_INSECURE_UPSTREAM", ""))
    # The latency contract: the longest gap between two looks at a pending id. The defaults
    # that depend on it follow it, so setting it alone is always accepted.
    cap = seconds("TRACKER_POLL_INTERVAL_MAX", 15.0, 0.1, 86400)
    notices = []
    if given("TRACKER_LEASE"):
        notices.append(
            "TRACKER_LEASE is no longer used and is ignored: a claim now lasts each request's "
            "own slot plus TRACKER_DISPATCH_INTERVAL and the HTTP timeouts"
        )

    values: dict[str, Any] = dict(
        useapi_token=Secret(env.get("USEAPI_TOKEN", "").strip()),
        useapi_base_url=_base_url(get("USEAPI_BASE_URL", DEFAULT_BASE_URL), insecure),
        allow_insecure_upstream=insecure,
        database_url=database_url,
        broker_url=broker_url,
        data_dir=data_dir,
        dispatch_interval=seconds("TRACKER_DISPATCH_INTERVAL", 5.0, 0.1, 3600),
        first_poll_delay=seconds("TRACKER_FIRST_POLL_DELAY", 15.0, 0, 86400),
        poll_interval_min=seconds("TRACKER_POLL_INTERVAL_MIN", min(15.0, cap), 0.1, 86400),
        poll_interval_max=cap,
        poll_jitter=_number(
            "TRACKER_POLL_JITTER", get("TRACKER_POLL_JITTER", "0.2"), float, 0, 0.9
        ),
        give_up_after=seconds("TRACKER_GIVE_UP_AFTER", 6 * 3600.0, 1, 365 * 86400.0),
        slow_after=seconds("TRACKER_SLOW_AFTER", 1800.0, 0, 365 * 86400.0),
        slow_interval=seconds("TRACKER_SLOW_INTERVAL", max(300.0, cap), 0.1, 86400),
        rate_limit=_number(
            "TRACKER_RATE_LIMIT", get("TRACKER_RATE_LIMIT", "5"), float, 0.01, 10000
        ),
        http_connect_timeout=seconds("TRACKER_HTTP_CONNECT_TIMEOUT", 5.0, 0.05, 300),
        http_timeout=seconds("TRACKER_HTTP_TIMEOUT", 20.0, 0.05, 600),
        max_body_bytes=whole("TRACKER_MAX_BODY_BYTES", 1_048_576, 1024, 512 * 1_048_576),
        batch_size=whole("TRACKER_BATCH_SIZE", 25, 1, 10000),
        poll_concurrency=whole("TRACKER_POLL_CONCURRENCY", 8, 1, 256),
        worker_concurrency=whole("TRACKER_WORKER_CONCURRENCY", 4, 1, 256),
        auth_pause=seconds("TRACKER_AUTH_PAUSE", 60.0, 0.1, 86400),
        rate_limit_pause=seconds("TRACKER_RATE_LIMIT_PAUSE", 15.0, 0.1, 3600),
        rate_recovery=seconds("TRACKER_RATE_RECOVERY", 60.0, 0.1, 86400),
        log_level=get("TRACKER_LOG_LEVEL", "INFO").strip().upper(),
        queue_prefix=_queue_prefix(get("TRACKER_QUEUE_PREFIX", "tracker")),
        log_format=_choice("TRACKER_LOG_FORMAT", get("TRACKER_LOG_FORMAT", "auto"), LOG_FORMATS),
        retention=seconds("TRACKER_RETENTION", 30 * 86400.0, 3600, 3650 * 86400.0),
        prune_interval=seconds("TRACKER_PRUNE_INTERVAL", 3600.0, 0, 30 * 86400.0),
        metrics_port=whole("TRACKER_METRICS_PORT", 9808, 0, 65535),
        beat_metrics_port=whole("TRACKER_BEAT_METRICS_PORT", 9809, 0, 65535),
        webhook_url=_webhook_url(env.get("TRACKER_WEBHOOK_URL", "")),
        webhook_secret=_webhook_secret(env.get("TRACKER_WEBHOOK_SECRET", "")),
        webhook_max_attempts=whole("TRACKER_WEBHOOK_MAX_ATTEMPTS", 15, 1, 100),
        webhook_timeout=seconds("TRACKER_WEBHOOK_TIMEOUT", 10.0, 0.1, 300),
        webhook_allow_private=_bool(
            "TRACKER_WEBHOOK_ALLOW_PRIVATE", get("TRACKER_WEBHOOK_ALLOW_PRIVATE", "")
        ),
        webhook_allowlist=_webhook_allowlist(env.get("TRACKER_WEBHOOK_ALLOWLIST", "")),
        webhook_concurrency=whole("TRACKER_WEBHOOK_CONCURRENCY", 4, 1, 64),
        schedule=_choice("TRACKER_SCHEDULE", get("TRACKER_SCHEDULE", "adaptive"), SCHEDULES),
        list_enabled=_bool("TRACKER_LIST", get("TRACKER_LIST", "true")),
        list_interval=seconds("TRACKER_LIST_INTERVAL", min(10.0, cap), 0.1, 3600),
        list_page_size=whole("TRACKER_LIST_PAGE_SIZE", 40, 1, 100),
        list_max_pages=whole("TRACKER_LIST_MAX_PAGES", 3, 1, 50),
        list_retry=seconds("TRACKER_LIST_RETRY", 3600.0, 0, 30 * 86400.0),
        typical_duration=seconds("TRACKER_TYPICAL_DURATION", 90.0, 1, 86400),
        scheduler_enabled=_bool("TRACKER_SCHEDULER", get("TRACKER_SCHEDULER", "true")),
        scheduler_interval=seconds("TRACKER_SCHEDULER_INTERVAL", 3.0, 0.5, 3600),
        notices=tuple(notices),
    )
    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _check_consistency(s: Settings) -> None:
    if s.slow_interval < s.poll_interval_max:
        raise SettingsError(
            f"TRACKER_SLOW_INTERVAL ({s.slow_interval:g}) is shorter than "
            f"TRACKER_POLL_INTERVAL_MAX ({s.poll_interval_max:g}): old videos would be polled "
            "more often than young ones"
        )
    if s.poll_interval_min > s.poll_interval_max:
        raise SettingsError(
            f"TRACKER_POLL_INTERVAL_MIN ({s.poll_interval_min:g}) is larger than "
            f"TRACKER_POLL_INTERVAL_MAX ({s.poll_interval_max:g})"
        )
    if s.list_enabled and s.list_interval > s.poll_interval_max:
        raise SettingsError(
            f"TRACKER_LIST_INTERVAL ({s.list_interval:g}) is longer than "
            f"TRACKER_POLL_INTERVAL_MAX ({s.poll_interval_max:g}): ids read through the list "
            "would be looked at less often than the backoff cap allows; lower it, or set "
            "TRACKER_LIST=false"
        )
    if s.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise SettingsError(f"TRACKER_LOG_LEVEL={s.log_level!r} is not a log level")

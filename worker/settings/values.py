"""The tracker's settings as one frozen object (``Settings``), the ``Secret`` that keeps the
token out of every repr, and the error every bad setting raises."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pixverse_tracker.rules.errors import TrackerError
from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.rules.webhooks import shown_url

DEFAULT_BASE_URL = "https://api.useapi.net"

EMBEDDED_BROKER_URL = "memory://"

EMBEDDED_DATABASE_FILE = "tracker.db"  # under TRACKER_DATA_DIR

# The push receiver (web/): the secret in its URL, the largest body it reads, and its
# servers' connection limits. The defaults here are the only ones (web.receiver_config uses them).
PUSH_SECRET_VARIABLE = "TRACKER_PUSH_SECRET"
MIN_PUSH_SECRET_LENGTH, MAX_PUSH_SECRET_LENGTH = 16, 256
PUSH_MAX_BYTES = 262_144
PUSH_MAX_CONNECTIONS = 1000
PUSH_HEADER_TIMEOUT, PUSH_BODY_TIMEOUT = 10.0, 20.0


class SettingsError(TrackerError, ValueError):
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


# The Policy fields whose setting has another name (Policy.field: Settings attribute).
POLICY_RENAMED = {"jitter": "poll_jitter"}


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
    push_secret: Secret
    push_max_bytes: int
    push_max_connections: int
    push_header_timeout: float
    push_body_timeout: float
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

    @property
    def policy(self) -> Policy:
        """The rules' slice of these settings: each Policy field is the setting of the same
        name, or the one POLICY_RENAMED names; ``list_interval`` is None while the list is off."""
        values = {f.name: getattr(self, POLICY_RENAMED.get(f.name, f.name)) for f in fields(Policy)}
        if not self.list_enabled:
            values["list_interval"] = None
        return Policy(**values)

    def require_token(self) -> str:
        """The token, or a clear error naming the variable when it is missing."""
        if not self.useapi_token:
            raise SettingsError(
                "USEAPI_TOKEN is not set: the tracker cannot poll useapi.net without it"
            )
        return self.useapi_token.reveal()

    def require_push_secret(self) -> Secret:
        """The receiver's secret, or a clear error when TRACKER_PUSH_SECRET is not set."""
        # Messages describe the secret, never quote it: they end up on terminals and in logs.
        if not self.push_secret:
            raise SettingsError(
                f"{PUSH_SECRET_VARIABLE} is not set: the push receiver needs it (at "
                f"least {MIN_PUSH_SECRET_LENGTH} characters, for example the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return self.push_secret

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


def _shown_setting(name: str, value: Any) -> Any:
    if name == "webhook_url" and value:
        return shown_url(value)  # its query string may carry the application's own token
    return mask_password(value) if name.endswith("_url") else value


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

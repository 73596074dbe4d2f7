"""Parsing one setting's text: each parser returns the value or raises a ``SettingsError``
whose one line names the variable and what is wrong with it."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from pixverse_tracker.rules.addresses import parse_allowlist
from pixverse_tracker.rules.webhooks import (
    InvalidSecret,
    InvalidWebhookUrl,
    signing_key,
    validate_url,
)
from pixverse_tracker.settings.values import (
    MAX_PUSH_SECRET_LENGTH,
    MIN_PUSH_SECRET_LENGTH,
    Secret,
    SettingsError,
)

T = TypeVar("T")


def parse_number(name: str, raw: str, cast: Callable[[str], T], low: float, high: float) -> T:
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


def parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean: use true or false")


def normalize_database_url(url: str) -> str:
    """Pin Postgres URLs to psycopg2, our driver.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which we do not ship; users
    write the usual ``postgresql://user@host/db`` (or Heroku-style ``postgres://``).
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def parse_database_url(_name: str, raw: str) -> str:
    url = normalize_database_url(raw.strip())
    if not (url.startswith("postgresql+psycopg2://") or url.startswith("sqlite")):
        scheme = url.split(":", 1)[0] or "(empty)"
        raise SettingsError(
            f"DATABASE_URL uses {scheme!r}: use postgresql://user@host/db or sqlite:///path.db"
        )
    return url


def parse_db_schema(raw: str, database_url: str) -> str | None:
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


def parse_base_url(raw: str, allow_insecure: bool) -> str:
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


def parse_webhook_url(_name: str, raw: str) -> str | None:
    try:
        return validate_url(raw)
    except InvalidWebhookUrl as exc:
        raise SettingsError(f"TRACKER_WEBHOOK_URL: {exc}") from None


def parse_webhook_secret(raw: str) -> Secret:
    secret = raw.strip()
    try:
        signing_key(secret)
    except InvalidSecret as exc:
        raise SettingsError(f"TRACKER_WEBHOOK_SECRET: {exc}") from None
    return Secret(secret)


def parse_webhook_allowlist(raw: str) -> str:
    try:
        parse_allowlist(raw)
    except ValueError as exc:
        raise SettingsError(f"TRACKER_WEBHOOK_ALLOWLIST: {exc}") from None
    return raw.strip()


def parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return value


def parse_queue_prefix(_name: str, raw: str) -> str:
    prefix = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", prefix):
        raise SettingsError(
            f"TRACKER_QUEUE_PREFIX={raw!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return prefix


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"{name}={level!r} is not a log level")
    return level


def float_in(low: float, high: float) -> Callable[[str, str], float]:
    return lambda name, raw: parse_number(name, raw, float, low, high)


def stripped_number(cast: Callable[[str], T], low: float, high: float) -> Callable[[str, str], T]:
    """parse_number on the text without its surrounding blanks (named so in its message)."""
    return lambda name, raw: parse_number(name, raw.strip(), cast, low, high)


# The push secret is a URL path segment: only unreserved characters (RFC 3986) survive every
# client, proxy and server unchanged, so anything else would make "right secret" depend on encoding.
_SECRET_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
DIGITS = re.compile(r"[0-9]{1,20}")  # a byte count: at most 20 digits, so int() stays cheap


def parse_push_secret(name: str, raw: str) -> Secret:
    # Messages describe the secret, never quote it: they end up on terminals and in logs.
    secret = raw.strip()
    low, high = MIN_PUSH_SECRET_LENGTH, MAX_PUSH_SECRET_LENGTH
    if not low <= len(secret) <= high:
        raise SettingsError(
            f"{name} is {len(secret)} characters long: it must have between {low} and {high}"
        )
    if not _SECRET_CHARS.fullmatch(secret):
        raise SettingsError(
            f"{name} may only hold letters, digits, '-', '_', '.' and '~' "
            "(it is part of the push receiver's URL path)"
        )
    return Secret(secret)


def byte_count_in(low: int, high: int) -> Callable[[str, str], int]:
    """A whole number of bytes, digits only (no sign, no exponent), between low and high."""

    def parse(name: str, raw: str) -> int:
        text = raw.strip()
        if not DIGITS.fullmatch(text):
            raise SettingsError(f"{name}={text!r} is not a whole number")
        if not low <= int(text) <= high:
            raise SettingsError(
                f"{name}={text!r} is out of range: it must be between {low} and {high}"
            )
        return int(text)

    return parse

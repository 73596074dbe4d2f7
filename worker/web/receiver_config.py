"""The receiver's own settings: the secret in its URL, the largest body it reads, and the
connection limits of its servers, read from the environment and checked."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pixverse_tracker.settings import Secret, SettingsError
from pixverse_tracker.web import connection_limits
from pixverse_tracker.web.connection_limits import ConnectionLimits

SECRET_VARIABLE = "TRACKER_CALLBACK_SECRET"
MAX_BYTES_VARIABLE = "TRACKER_CALLBACK_MAX_BYTES"
DEFAULT_MAX_BYTES = 262_144
MIN_MAX_BYTES, MAX_MAX_BYTES = 1024, 16 * 1_048_576
MIN_SECRET_LENGTH, MAX_SECRET_LENGTH = 16, 256
# The secret is a URL path segment: only unreserved characters (RFC 3986) survive every client,
# proxy and server unchanged, so anything else would make "right secret" depend on encoding.
_SECRET_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
DIGITS = re.compile(r"[0-9]{1,20}")  # a byte count: at most 20 digits, so int() stays cheap


@dataclass(frozen=True)
class ReceiverConfig:
    """The receiver's own settings: the secret in its URL and the largest body it reads."""

    secret: Secret
    max_body_bytes: int = DEFAULT_MAX_BYTES
    limits: ConnectionLimits = dataclasses.field(default_factory=ConnectionLimits)


def from_env(environ: Mapping[str, str] | None = None) -> ReceiverConfig:
    """Read and validate the receiver's settings; SettingsError names the bad variable."""
    env = os.environ if environ is None else environ
    secret = env.get(SECRET_VARIABLE, "").strip()
    # Messages describe the secret, never quote it: they end up on terminals and in logs.
    if not secret:
        raise SettingsError(
            f"{SECRET_VARIABLE} is not set: the callbacks receiver needs it (at least "
            f"{MIN_SECRET_LENGTH} characters, for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise SettingsError(
            f"{SECRET_VARIABLE} is {len(secret)} characters long: it must have between "
            f"{MIN_SECRET_LENGTH} and {MAX_SECRET_LENGTH}"
        )
    if not _SECRET_CHARS.fullmatch(secret):
        raise SettingsError(
            f"{SECRET_VARIABLE} may only hold letters, digits, '-', '_', '.' and '~' "
            "(it is part of the callback URL's path)"
        )
    raw = env.get(MAX_BYTES_VARIABLE, "").strip() or str(DEFAULT_MAX_BYTES)
    if not DIGITS.fullmatch(raw):
        raise SettingsError(f"{MAX_BYTES_VARIABLE}={raw!r} is not a whole number")
    max_bytes = int(raw)
    if not MIN_MAX_BYTES <= max_bytes <= MAX_MAX_BYTES:
        raise SettingsError(
            f"{MAX_BYTES_VARIABLE}={raw!r} is out of range: it must be between "
            f"{MIN_MAX_BYTES} and {MAX_MAX_BYTES}"
        )
    return ReceiverConfig(Secret(secret), max_bytes, connection_limits.from_env(env))

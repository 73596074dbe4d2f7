"""The receiver's own settings: the secret in its URL, the largest body it reads, and the
connection limits of its servers, taken from the Settings (the settings package reads and checks
TRACKER_PUSH_*: ``settings.RECEIVER``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pixverse_tracker.settings import Secret, Settings
from pixverse_tracker.settings.values import PUSH_MAX_BYTES, PUSH_SECRET_VARIABLE
from pixverse_tracker.web.connection_limits import ConnectionLimits

SECRET_VARIABLE = PUSH_SECRET_VARIABLE
DEFAULT_MAX_BYTES = PUSH_MAX_BYTES


@dataclass(frozen=True)
class ReceiverConfig:
    """The receiver's own settings: the secret in its URL and the largest body it reads."""

    secret: Secret
    max_body_bytes: int = DEFAULT_MAX_BYTES
    limits: ConnectionLimits = dataclasses.field(default_factory=ConnectionLimits)


def from_settings(settings: Settings) -> ReceiverConfig:
    """The receiver's config; SettingsError when TRACKER_PUSH_SECRET is not set. The
    settings must have been loaded with ``settings.RECEIVER`` among the concerns checked."""
    return ReceiverConfig(
        settings.require_push_secret(),
        settings.push_max_bytes,
        ConnectionLimits(
            settings.push_max_connections,
            settings.push_header_timeout,
            settings.push_body_timeout,
        ),
    )

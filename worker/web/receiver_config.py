"""The receiver's own settings: the secret in its URL, the largest body it reads, and the
connection limits of its servers, taken from the Settings (the settings package reads and checks
TRACKER_CALLBACK_*: ``settings.RECEIVER``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pixverse_tracker.settings import Secret, Settings
from pixverse_tracker.settings.values import CALLBACK_MAX_BYTES, CALLBACK_SECRET_VARIABLE
from pixverse_tracker.web.connection_limits import ConnectionLimits

SECRET_VARIABLE = CALLBACK_SECRET_VARIABLE
DEFAULT_MAX_BYTES = CALLBACK_MAX_BYTES


@dataclass(frozen=True)
class ReceiverConfig:
    """The receiver's own settings: the secret in its URL and the largest body it reads."""

    secret: Secret
    max_body_bytes: int = DEFAULT_MAX_BYTES
    limits: ConnectionLimits = dataclasses.field(default_factory=ConnectionLimits)


def from_settings(settings: Settings) -> ReceiverConfig:
    """The receiver's config; SettingsError when TRACKER_CALLBACK_SECRET is not set. The
    settings must have been loaded with ``settings.RECEIVER`` among the concerns checked."""
    return ReceiverConfig(
        settings.require_callback_secret(),
        settings.callback_max_bytes,
        ConnectionLimits(
            settings.callback_max_connections,
            settings.callback_header_timeout,
            settings.callback_body_timeout,
        ),
    )

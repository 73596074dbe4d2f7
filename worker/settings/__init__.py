"""The tracker's settings: one frozen ``Settings`` read from the environment by ``load``,
checked once, every problem reported at once (``SettingsError``, one line each).

``values`` holds the object, ``parsing`` one parser per kind of value, ``environment`` the
reading, concern by concern; this package offers what the rest of the tracker uses.
"""

from pixverse_tracker.settings.environment import (
    BROKER,
    DATABASE,
    EVERYTHING,
    LOGGING,
    MAINTENANCE,
    METRICS,
    POLLING,
    RECEIVER,
    UPSTREAM,
    WEBHOOKS,
    load,
)
from pixverse_tracker.settings.parsing import normalize_database_url
from pixverse_tracker.settings.values import (
    DEFAULT_BASE_URL,
    EMBEDDED_BROKER_URL,
    Secret,
    Settings,
    SettingsError,
    mask_password,
)

__all__ = [
    "BROKER",
    "DATABASE",
    "DEFAULT_BASE_URL",
    "EMBEDDED_BROKER_URL",
    "EVERYTHING",
    "LOGGING",
    "MAINTENANCE",
    "METRICS",
    "POLLING",
    "RECEIVER",
    "UPSTREAM",
    "WEBHOOKS",
    "Secret",
    "Settings",
    "SettingsError",
    "load",
    "mask_password",
    "normalize_database_url",
]

"""pixverse-tracker: keeps a database table true to useapi.net's PixVerse v2 video records.

The Python API for applications (``pixverse_tracker.api``), at the top of the package::

    import pixverse_tracker

    report = pixverse_tracker.enqueue(["user:1-pixverse:me@example.com-video:42"])
    video = pixverse_tracker.wait_for("user:1-pixverse:me@example.com-video:42", timeout=600)

Every error the tracker raises on purpose is a ``pixverse_tracker.TrackerError``
(``SettingsError``, ``InvalidWebhookUrl``, ``InvalidId``, ...).
"""

from pixverse_tracker.api import (
    Cursor,
    EnqueueReport,
    Page,
    VideoView,
    completed_since,
    enqueue,
    enqueue_numbered,
    get,
    wait_for,
)
from pixverse_tracker.rules.errors import TrackerError
from pixverse_tracker.rules.ids import InvalidId
from pixverse_tracker.rules.webhooks import InvalidCallbackUrl, InvalidWebhookUrl
from pixverse_tracker.settings import SettingsError

# The API's functions, the types they return, and the errors they raise.
__all__ = [
    "Cursor",
    "EnqueueReport",
    "InvalidCallbackUrl",  # deprecated: InvalidWebhookUrl under its name before 0.2
    "InvalidId",
    "InvalidWebhookUrl",
    "Page",
    "SettingsError",
    "TrackerError",
    "VideoView",
    "completed_since",
    "enqueue",
    "enqueue_numbered",
    "get",
    "wait_for",
]

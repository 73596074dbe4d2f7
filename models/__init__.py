"""The tracker's SQLAlchemy models: the public ``videos`` table, its history and shared state.

No engine and no I/O here: importing models never touches a database.
"""

from pixverse_tracker.models.base import Base, UTCDateTime
from pixverse_tracker.models.control import CONTROL_ROW_ID, PollMinute, TrackerControl
from pixverse_tracker.models.outbox import WebhookDelivery
from pixverse_tracker.models.video import Video, VideoEvent
from pixverse_tracker.rules.state import State

metadata = Base.metadata

__all__ = [
    "CONTROL_ROW_ID",
    "Base",
    "PollMinute",
    "State",
    "TrackerControl",
    "UTCDateTime",
    "Video",
    "VideoEvent",
    "WebhookDelivery",
    "metadata",
]

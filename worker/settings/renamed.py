"""Variables that were renamed: the one table of old name -> new name, and how a value is looked
up through it.

An old name still works: its value is used as the new name's, with one deprecation line per
process (a WARNING on the ``tracker.settings`` logger, ``action=setting_deprecated``) naming
both, never the value. Both names set to different values is a settings error naming both; to
the same value, it is fine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

# old name -> new name. 0.2: the receiver of useapi.net's pushes was the "callbacks" receiver;
# "callback" now means only the webhooks the tracker sends (README "Renamed names").
RENAMED: dict[str, str] = {
    "TRACKER_CALLBACK_SECRET": "TRACKER_PUSH_SECRET",
    "TRACKER_CALLBACK_MAX_BYTES": "TRACKER_PUSH_MAX_BYTES",
    "TRACKER_CALLBACK_HEADER_TIMEOUT": "TRACKER_PUSH_HEADER_TIMEOUT",
    "TRACKER_CALLBACK_BODY_TIMEOUT": "TRACKER_PUSH_BODY_TIMEOUT",
    "TRACKER_CALLBACK_MAX_CONNECTIONS": "TRACKER_PUSH_MAX_CONNECTIONS",
}
OLD_NAME = {new: old for old, new in RENAMED.items()}

log = logging.getLogger("tracker.settings")

_warned: set[str] = set()  # old names whose deprecation line this process has written
_warned_lock = threading.Lock()


def _set(value: str | None) -> str | None:
    return None if value is None or not value.strip() else value


def lookup(env: Mapping[str, str], name: str) -> tuple[str, str | None, str | None]:
    """``(the name the value was set under, the value or None, a problem or None)``.

    A blank value counts as unset. The problem is one line naming both names when the old and
    the new one are set to different values (the new one's value is returned then).
    """
    value = _set(env.get(name))
    old = OLD_NAME.get(name)
    old_value = None if old is None else _set(env.get(old))
    if old is None or old_value is None:
        return name, value, None
    if value is not None and value.strip() != old_value.strip():
        # The error says all there is to say (no deprecation line besides it).
        return (
            name,
            value,
            f"{old} and {name} are both set, to different values: {old} is the old name of "
            f"{name}; set only {name}",
        )
    deprecated(old)
    return (old, old_value, None) if value is None else (name, value, None)


def deprecated(old: str) -> None:
    """Write ``old``'s deprecation line, once per process."""
    with _warned_lock:
        if old in _warned:
            return
        _warned.add(old)
    line = f"{old} is deprecated: use {RENAMED[old]} (the old name still works)"
    # The tracker's formatters show the action and its fields (as logs.event writes them, which
    # this package may not import); any other handler shows the sentence.
    extra = {"action": "setting_deprecated", "fields": {"detail": line}}
    log.warning("%s", line, extra=extra)

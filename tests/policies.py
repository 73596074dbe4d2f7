"""The rules' Policy for tests: the default settings' own, with the changes a test names.

Policy has no defaults of its own (Settings.policy builds it), so tests start from the default
Settings' Policy. The one difference from the production defaults: the list endpoint is off
(``list_interval`` None) unless a test sets it, since these tests were written for ids polled
one by one (as Policy() was, before its defaults moved to the settings).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.settings import load

# The production defaults, exactly (the list on): what the settings give an empty environment.
PRODUCTION = load({}).policy


def policy_with(**changes: Any) -> Policy:
    """The default settings' Policy, the list off unless ``list_interval`` is given, and
    ``changes``."""
    return dataclasses.replace(PRODUCTION, **{"list_interval": None, **changes})

"""The timing knobs the rules need: a slice of Settings, so the rules stay free of the env.

Policy has no defaults of its own: each knob's default is the setting's, written once in
settings/environment.py, and ``Settings.policy`` builds the Policy from the Settings (the
rules may not import settings/, so the builder lives there).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """The timing knobs the rules need (a slice of Settings, so rules stay free of the env).
    Build it with ``Settings.policy``: each field is the setting of the same name, but
    ``jitter`` (``poll_jitter``) and ``list_interval`` (None while the list is off)."""

    first_poll_delay: float
    poll_interval_min: float
    poll_interval_max: float
    jitter: float
    give_up_after: float
    auth_pause: float
    rate_limit_pause: float
    rate_recovery: float
    slow_after: float
    slow_interval: float
    # "adaptive" (rules/schedule.py, once the table has enough finished videos) or "backoff"
    schedule: str
    # The per-account grid period for ids read through the list endpoint; None: no list.
    list_interval: float | None
    # How long an id the list did not show is fetched by id before the list is tried again.
    list_retry: float
    # The median completion time assumed until the table has observed enough (schedule.prior_for)
    typical_duration: float

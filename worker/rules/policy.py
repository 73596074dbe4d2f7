"""The timing knobs the rules need: a slice of Settings, so the rules stay free of the env."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """The timing knobs the rules need (a slice of Settings, so rules stay free of the env)."""

    first_poll_delay: float = 15.0
    poll_interval_min: float = 15.0
    poll_interval_max: float = 15.0
    jitter: float = 0.2
    give_up_after: float = 6 * 3600.0
    auth_pause: float = 60.0
    rate_limit_pause: float = 15.0
    rate_recovery: float = 60.0
    slow_after: float = 1800.0
    slow_interval: float = 300.0
    # "adaptive" (rules/schedule.py, once the table has enough finished videos) or "backoff"
    schedule: str = "adaptive"
    # The per-account grid period for ids read through the list endpoint; None: no list.
    list_interval: float | None = None
    # How long an id the list did not show is fetched by id before the list is tried again.
    list_retry: float = 3600.0
    # The median completion time assumed until the table has observed enough (schedule.prior_for)
    typical_duration: float = 90.0

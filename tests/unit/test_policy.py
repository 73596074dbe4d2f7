"""The rules' Policy is derived from the Settings: every knob's default is written once."""

from __future__ import annotations

from dataclasses import fields

import pytest

from pixverse_tracker.rules.policy import Policy
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import Settings, load

# Policy field -> the Settings attribute it is (written out here, not read from the code).
SETTING_OF = {
    "first_poll_delay": "first_poll_delay",
    "poll_interval_min": "poll_interval_min",
    "poll_interval_max": "poll_interval_max",
    "jitter": "poll_jitter",
    "give_up_after": "give_up_after",
    "auth_pause": "auth_pause",
    "rate_limit_pause": "rate_limit_pause",
    "rate_recovery": "rate_recovery",
    "slow_after": "slow_after",
    "slow_interval": "slow_interval",
    "schedule": "schedule",
    "list_interval": "list_interval",
    "list_retry": "list_retry",
    "typical_duration": "typical_duration",
}

# Every knob away from its default.
CHANGED = {
    "TRACKER_FIRST_POLL_DELAY": "3",
    "TRACKER_POLL_INTERVAL_MIN": "4",
    "TRACKER_POLL_INTERVAL_MAX": "40",
    "TRACKER_POLL_JITTER": "0.5",
    "TRACKER_GIVE_UP_AFTER": "7200",
    "TRACKER_AUTH_PAUSE": "61",
    "TRACKER_RATE_LIMIT_PAUSE": "16",
    "TRACKER_RATE_RECOVERY": "62",
    "TRACKER_SLOW_AFTER": "900",
    "TRACKER_SLOW_INTERVAL": "400",
    "TRACKER_SCHEDULE": "backoff",
    "TRACKER_LIST_INTERVAL": "20",
    "TRACKER_LIST_RETRY": "1800",
    "TRACKER_TYPICAL_DURATION": "120",
}


def test_every_field_of_the_policy_is_named_here() -> None:
    assert [f.name for f in fields(Policy)] == list(SETTING_OF)
    # No field has a default of its own: the settings' default is the only one.
    assert Policy.__dataclass_fields__.keys() == SETTING_OF.keys()
    with pytest.raises(TypeError):
        Policy()  # type: ignore[call-arg]


@pytest.mark.parametrize("env", [{}, CHANGED], ids=["defaults", "changed"])
def test_every_field_of_the_policy_is_its_setting(env: dict[str, str]) -> None:
    settings = load(env)
    policy = settings.policy
    for field, attribute in SETTING_OF.items():
        assert getattr(policy, field) == getattr(settings, attribute), field


def test_the_defaults_are_the_documented_ones() -> None:
    policy = load({}).policy
    assert (policy.first_poll_delay, policy.poll_interval_min, policy.poll_interval_max) == (
        15.0,
        15.0,
        15.0,
    )
    assert (policy.jitter, policy.give_up_after, policy.auth_pause) == (0.2, 6 * 3600.0, 60.0)
    assert (policy.rate_limit_pause, policy.rate_recovery) == (15.0, 60.0)
    assert (policy.slow_after, policy.slow_interval, policy.schedule) == (1800.0, 300.0, "adaptive")
    assert (policy.list_interval, policy.list_retry, policy.typical_duration) == (
        10.0,
        3600.0,
        90.0,
    )


def test_a_changed_setting_reaches_the_policy() -> None:
    policy = load(CHANGED).policy
    assert policy == Policy(
        first_poll_delay=3.0,
        poll_interval_min=4.0,
        poll_interval_max=40.0,
        jitter=0.5,
        give_up_after=7200.0,
        auth_pause=61.0,
        rate_limit_pause=16.0,
        rate_recovery=62.0,
        slow_after=900.0,
        slow_interval=400.0,
        schedule="backoff",
        list_interval=20.0,
        list_retry=1800.0,
        typical_duration=120.0,
    )


def test_with_the_list_off_the_policy_has_no_grid() -> None:
    settings = load({"TRACKER_LIST": "false", "TRACKER_LIST_INTERVAL": "20"})
    assert settings.list_interval == 20.0
    assert settings.policy.list_interval is None


def test_the_runtime_uses_the_settings_policy() -> None:
    settings: Settings = load(CHANGED)
    assert Runtime(settings).policy == settings.policy

"""The receiver's connection limits: settings, the deadline rule, fitting the open-file limit."""

from __future__ import annotations

import resource

import pytest

from pixverse_tracker.settings import RECEIVER, SettingsError, load
from pixverse_tracker.web.connection_limits import (
    RESERVED_FILES,
    ConnectionLimits,
    FileFit,
    deadline,
    fit,
)

UNLIMITED = resource.RLIM_INFINITY


def limits_from(env: dict[str, str]) -> ConnectionLimits:
    """The limits as the receiver gets them: the settings' RECEIVER concern."""
    settings = load(env, needs=(RECEIVER,))
    return ConnectionLimits(
        settings.push_max_connections,
        settings.push_header_timeout,
        settings.push_body_timeout,
    )


def test_the_defaults_are_a_thousand_connections_ten_seconds_of_headers_twenty_of_body() -> None:
    assert limits_from({}) == ConnectionLimits(1000, 10.0, 20.0)


def test_each_limit_is_read_from_its_variable() -> None:
    env = {
        "TRACKER_PUSH_MAX_CONNECTIONS": " 50 ",
        "TRACKER_PUSH_HEADER_TIMEOUT": "2.5",
        "TRACKER_PUSH_BODY_TIMEOUT": "7",
    }
    assert limits_from(env) == ConnectionLimits(50, 2.5, 7.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TRACKER_PUSH_MAX_CONNECTIONS", "many", "is not a whole number"),
        ("TRACKER_PUSH_MAX_CONNECTIONS", "0", "is out of range"),
        ("TRACKER_PUSH_MAX_CONNECTIONS", "1.5", "is not a whole number"),
        ("TRACKER_PUSH_HEADER_TIMEOUT", "0", "is out of range"),
        ("TRACKER_PUSH_HEADER_TIMEOUT", "nan", "is out of range"),
        ("TRACKER_PUSH_BODY_TIMEOUT", "inf", "is out of range"),
        ("TRACKER_PUSH_BODY_TIMEOUT", "soon", "is not a number"),
    ],
)
def test_a_bad_limit_is_refused_naming_its_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}='{value}' {message}"):
        limits_from({name: value})


def test_headers_are_due_from_the_start_and_the_body_from_the_end_of_the_headers() -> None:
    limits = ConnectionLimits(10, header_timeout=10.0, body_timeout=20.0)
    assert deadline(limits, started=100.0, headers_done=None) == 110.0
    # However long the headers took, the body gets its own full time after them.
    assert deadline(limits, started=100.0, headers_done=109.0) == 129.0


def test_a_soft_limit_with_room_for_the_cap_is_left_alone() -> None:
    assert fit(1000, soft=1000 + RESERVED_FILES, hard=4096) == FileFit(None, 1000)
    assert fit(1000, soft=UNLIMITED, hard=UNLIMITED) == FileFit(None, 1000)


def test_the_soft_limit_is_raised_just_enough_when_the_hard_limit_allows() -> None:
    assert fit(1000, soft=1024, hard=65536) == FileFit(1000 + RESERVED_FILES, 1000)
    assert fit(1000, soft=1024, hard=UNLIMITED) == FileFit(1000 + RESERVED_FILES, 1000)


def test_under_a_low_hard_limit_the_cap_is_lowered_and_says_so() -> None:
    fitted = fit(1000, soft=256, hard=512)
    assert fitted == FileFit(512, 512 - RESERVED_FILES)
    line = fitted.lowered_from(1000)
    assert line is not None
    assert line.startswith("TRACKER_PUSH_MAX_CONNECTIONS=1000 does not fit")
    assert f"accepting at most {512 - RESERVED_FILES} connections" in line
    assert fit(1000, soft=200, hard=200) == FileFit(None, 200 - RESERVED_FILES)
    assert FileFit(None, 1000).lowered_from(1000) is None


def test_a_limit_that_leaves_no_room_for_a_connection_is_an_error() -> None:
    with pytest.raises(SettingsError, match="leaves no room for connections"):
        fit(1000, soft=RESERVED_FILES, hard=RESERVED_FILES)


def test_the_receivers_settings_are_checked_only_where_the_receiver_runs() -> None:
    # A worker (EVERYTHING) never reads TRACKER_PUSH_*: a bad one does not stop it, as before.
    env = {"TRACKER_PUSH_MAX_CONNECTIONS": "many", "TRACKER_PUSH_SECRET": "short"}
    assert load(env).push_max_connections == ConnectionLimits().max_connections
    with pytest.raises(SettingsError) as caught:
        load(env, needs=(RECEIVER,))
    assert str(caught.value).splitlines() == [
        "TRACKER_PUSH_SECRET is 5 characters long: it must have between 16 and 256",
        "TRACKER_PUSH_MAX_CONNECTIONS='many' is not a whole number",
    ]
    # An unset secret is refused by the receiver itself, with the line it always had.
    with pytest.raises(SettingsError, match="^TRACKER_PUSH_SECRET is not set: "):
        load({}, needs=(RECEIVER,)).require_push_secret()

"""Renamed variables (settings/renamed.py): the old TRACKER_CALLBACK_* names of the push
receiver still work, with one deprecation line per process; both names set differently is an
error naming both."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pixverse_tracker.settings import EVERYTHING, RECEIVER, SettingsError, load, renamed

SECRET = "a-push-secret-of-32-characters.."

# new name -> (a value, the Settings field it sets, what the field holds then)
SAMPLES: dict[str, tuple[str, str, Any]] = {
    "TRACKER_PUSH_SECRET": (SECRET, "push_secret", SECRET),
    "TRACKER_PUSH_MAX_BYTES": ("2048", "push_max_bytes", 2048),
    "TRACKER_PUSH_HEADER_TIMEOUT": ("2.5", "push_header_timeout", 2.5),
    "TRACKER_PUSH_BODY_TIMEOUT": ("7", "push_body_timeout", 7.0),
    "TRACKER_PUSH_MAX_CONNECTIONS": ("50", "push_max_connections", 50),
}


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test is a process that has written no deprecation line yet."""
    monkeypatch.setattr(renamed, "_warned", set())
    yield


def _field(value: Any) -> Any:
    return value.reveal() if hasattr(value, "reveal") else value


def _deprecation_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tracker.settings" and getattr(r, "action", None) == "setting_deprecated"
    ]


def test_the_table_renames_each_old_receiver_variable_to_its_push_name() -> None:
    assert renamed.RENAMED == {
        "TRACKER_CALLBACK_SECRET": "TRACKER_PUSH_SECRET",
        "TRACKER_CALLBACK_MAX_BYTES": "TRACKER_PUSH_MAX_BYTES",
        "TRACKER_CALLBACK_HEADER_TIMEOUT": "TRACKER_PUSH_HEADER_TIMEOUT",
        "TRACKER_CALLBACK_BODY_TIMEOUT": "TRACKER_PUSH_BODY_TIMEOUT",
        "TRACKER_CALLBACK_MAX_CONNECTIONS": "TRACKER_PUSH_MAX_CONNECTIONS",
    }
    assert set(renamed.RENAMED.values()) == set(SAMPLES)


@pytest.mark.parametrize("old", sorted(renamed.RENAMED))
def test_an_old_name_still_works_and_says_so_once_per_process(
    old: str, caplog: pytest.LogCaptureFixture
) -> None:
    new = renamed.RENAMED[old]
    value, field, expected = SAMPLES[new]
    caplog.set_level(logging.WARNING, logger="tracker.settings")
    for _ in range(3):  # a process loads its settings more than once (CLI, Celery's signals)
        settings = load({old: value}, needs=[RECEIVER])
        assert _field(getattr(settings, field)) == expected
        assert _field(getattr(settings, field)) == _field(
            getattr(load({new: value}, needs=[RECEIVER]), field)
        )
    assert _deprecation_lines(caplog) == [
        f"{old} is deprecated: use {new} (the old name still works)"
    ]


def test_the_new_name_alone_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tracker.settings")
    load({new: value for new, (value, _, _) in SAMPLES.items()}, needs=[RECEIVER])
    assert _deprecation_lines(caplog) == []


def test_the_deprecation_line_never_shows_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    load({"TRACKER_CALLBACK_SECRET": SECRET}, needs=[RECEIVER])
    assert len(_deprecation_lines(caplog)) == 1
    assert SECRET not in caplog.text
    assert all(SECRET not in repr(vars(r)) for r in caplog.records)


@pytest.mark.parametrize("old", sorted(renamed.RENAMED))
def test_old_and_new_names_set_differently_is_one_line_naming_both(
    old: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tracker.settings")
    new = renamed.RENAMED[old]
    value = SAMPLES[new][0]
    other = "another-push-secret-of-32-chars." if new == "TRACKER_PUSH_SECRET" else "60"
    with pytest.raises(SettingsError) as refused:
        load({old: other, new: value}, needs=[RECEIVER])
    assert str(refused.value) == (
        f"{old} and {new} are both set, to different values: {old} is the old name of {new}; "
        f"set only {new}"
    )
    assert value not in str(refused.value) and other not in str(refused.value)
    assert _deprecation_lines(caplog) == []  # the error is the one line


@pytest.mark.parametrize("old", sorted(renamed.RENAMED))
def test_old_and_new_names_set_to_the_same_value_are_fine(old: str) -> None:
    new = renamed.RENAMED[old]
    value, field, expected = SAMPLES[new]
    settings = load({old: f" {value} ", new: value}, needs=[RECEIVER])
    assert _field(getattr(settings, field)) == expected


def test_a_bad_value_under_the_old_name_is_refused_naming_the_old_name() -> None:
    with pytest.raises(SettingsError) as refused:
        load({"TRACKER_CALLBACK_MAX_CONNECTIONS": "many"}, needs=[RECEIVER])
    assert str(refused.value) == "TRACKER_CALLBACK_MAX_CONNECTIONS='many' is not a whole number"


def test_a_conflict_stops_only_the_receiver_as_any_bad_receiver_setting() -> None:
    env = {"TRACKER_CALLBACK_SECRET": SECRET, "TRACKER_PUSH_SECRET": SECRET[::-1]}
    assert not load(env, needs=EVERYTHING).push_secret  # a worker takes the defaults
    with pytest.raises(SettingsError, match="are both set, to different values"):
        load(env, needs=[RECEIVER])


def test_a_blank_old_name_is_unset(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tracker.settings")
    settings = load({"TRACKER_CALLBACK_SECRET": "  ", "TRACKER_PUSH_SECRET": SECRET})
    assert settings.push_secret.reveal() == SECRET
    assert _deprecation_lines(caplog) == []

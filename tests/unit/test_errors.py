"""One root for the tracker's errors: an application catches pixverse_tracker.TrackerError."""

from __future__ import annotations

from typing import Any

import pytest

import pixverse_tracker
from pixverse_tracker.cli.context import CommandError
from pixverse_tracker.rules.errors import TrackerError
from pixverse_tracker.rules.ids import InvalidId, validate
from pixverse_tracker.rules.webhooks import InvalidSecret, InvalidWebhookUrl
from pixverse_tracker.settings import SettingsError

GOOD_ID = "user:1-pixverse:me@example.com-video:42"


def test_the_root_is_offered_at_the_top_of_the_package() -> None:
    assert pixverse_tracker.TrackerError is TrackerError
    assert "TrackerError" in pixverse_tracker.__all__


@pytest.mark.parametrize(
    "error", [SettingsError, InvalidId, InvalidWebhookUrl, InvalidSecret, CommandError]
)
def test_every_error_of_the_tracker_is_a_tracker_error(error: type[Exception]) -> None:
    assert issubclass(error, TrackerError)
    # The docstring says what the error means; the instance message carries the specifics.
    assert error.__doc__ and error.__doc__.strip()


@pytest.mark.parametrize("error", [SettingsError, InvalidId, InvalidWebhookUrl, InvalidSecret])
def test_a_value_refused_is_still_a_value_error(error: type[Exception]) -> None:
    # Callers that catch ValueError keep working.
    assert issubclass(error, ValueError)


def test_every_error_the_top_level_offers_is_a_tracker_error() -> None:
    offered = [getattr(pixverse_tracker, name) for name in pixverse_tracker.__all__]
    errors = [item for item in offered if isinstance(item, type) and issubclass(item, Exception)]
    assert {error.__name__ for error in errors} >= {
        "TrackerError",
        "SettingsError",
        "InvalidWebhookUrl",
        "InvalidId",
    }
    assert all(issubclass(error, TrackerError) for error in errors)


def test_enqueue_reports_a_bad_id_and_raises_a_tracker_error_for_a_bad_webhook_url() -> None:
    # A bad id is refused in the report (no exception, nothing touches a database)...
    report = pixverse_tracker.enqueue(["nope"])
    assert not report.ok and [r.video_id for r in report.refused] == ["nope"]
    # ...and what enqueue raises for a bad argument is caught as a TrackerError.
    with pytest.raises(InvalidWebhookUrl):
        try:
            pixverse_tracker.enqueue([GOOD_ID], webhook_url="ftp://example.com/hook")
        except pixverse_tracker.TrackerError as caught:
            assert "http or https" in str(caught)
            raise


def test_validating_a_bad_id_raises_a_tracker_error() -> None:
    with pytest.raises(pixverse_tracker.TrackerError, match="invalid id 'nope'") as caught:
        validate("nope")
    assert isinstance(caught.value, pixverse_tracker.InvalidId)


# --- names before 0.2, still accepted -----------------------------------------------------------


def test_invalid_callback_url_is_invalid_webhook_url_under_its_old_name() -> None:
    from pixverse_tracker.rules import webhooks

    assert pixverse_tracker.InvalidCallbackUrl is InvalidWebhookUrl
    assert webhooks.InvalidCallbackUrl is InvalidWebhookUrl
    assert "InvalidCallbackUrl" in pixverse_tracker.__all__
    with pytest.raises(pixverse_tracker.InvalidCallbackUrl, match="http or https"):
        pixverse_tracker.enqueue([GOOD_ID], webhook_url="ftp://example.com/hook")


def test_the_old_callback_url_keyword_warns_and_is_validated_as_webhook_url() -> None:
    # validated before any database is touched: the warning, then the same refusal
    with (
        pytest.warns(DeprecationWarning, match=r"callback_url=\.\.\.\) is deprecated.*webhook_url"),
        pytest.raises(InvalidWebhookUrl, match="http or https"),
    ):
        pixverse_tracker.enqueue([GOOD_ID], callback_url="ftp://example.com/hook")


@pytest.mark.parametrize("enqueue", [pixverse_tracker.enqueue, pixverse_tracker.enqueue_numbered])
def test_webhook_url_and_the_old_callback_url_together_are_refused_naming_both(
    enqueue: Any,
) -> None:
    url = "https://app.example.com/hook"
    with pytest.raises(TypeError, match="both webhook_url and callback_url"):
        enqueue([], webhook_url=url, callback_url=url)

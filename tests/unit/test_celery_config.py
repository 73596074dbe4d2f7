"""The Celery configuration the tracker derives from its settings (no broker needed)."""

from __future__ import annotations

import logging

import pytest
from kombu import Connection

from pixverse_tracker.jobs.app import celery_config
from pixverse_tracker.settings import load


def test_remote_control_and_events_are_off_by_default_and_one_setting_turns_them_on() -> None:
    config = celery_config(load({}))
    assert config["worker_enable_remote_control"] is False
    assert config["worker_send_task_events"] is False
    # what `celery inspect` and Flower need
    config = celery_config(load({"TRACKER_CELERY_CONTROL": "true"}))
    assert config["worker_enable_remote_control"] is True
    assert config["worker_send_task_events"] is True
    assert config["task_send_sent_event"] is True


def test_control_and_event_exchanges_are_the_trackers_own_on_a_shared_redis() -> None:
    one = celery_config(load({"TRACKER_QUEUE_PREFIX": "shop"}))
    other = celery_config(load({"TRACKER_QUEUE_PREFIX": "blog"}))
    assert one["control_exchange"] != other["control_exchange"]
    assert one["event_exchange"] != other["event_exchange"]
    assert "shop" in one["control_exchange"] and "shop" in one["event_exchange"]


def test_the_embedded_broker_gives_kombu_nothing_to_warn_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = celery_config(load({}))  # the embedded default: nothing configured
    caplog.set_level(logging.WARNING, logger="kombu")
    with Connection(config["broker_url"]) as connection:
        assert connection.transport_cls == "memory"
        connection.info()  # where kombu warned "No hostname was supplied"
    assert caplog.records == []


def test_a_real_broker_url_is_passed_on_unchanged() -> None:
    config = celery_config(load({"CELERY_BROKER_URL": "redis://cache.internal:6379/2"}))
    assert config["broker_url"] == "redis://cache.internal:6379/2"

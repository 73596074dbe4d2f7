"""Unit tests for worker.app.celery_config: what the Celery app is told, without a broker."""

from __future__ import annotations

import logging

import pytest
from kombu import Connection

from worker.app import celery_config
from worker.settings import load


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

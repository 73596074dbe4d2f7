"""One tuple of public columns; every face's set is derived from it."""

from __future__ import annotations

from dataclasses import fields

import pytest
from sqlalchemy import inspect

from pixverse_tracker.api import VideoView
from pixverse_tracker.cli import render
from pixverse_tracker.models import Video
from pixverse_tracker.rules import columns, webhooks
from pixverse_tracker.rules.columns import (
    LISTED_COLUMNS,
    PAYLOAD_COLUMNS,
    PUBLIC_COLUMNS,
    RECORD,
    SCHEDULE_COLUMNS,
)


def test_the_api_view_is_the_public_columns_in_order() -> None:
    assert tuple(f.name for f in fields(VideoView)) == PUBLIC_COLUMNS


def test_every_public_column_is_a_column_of_the_table() -> None:
    table = {column.key for column in inspect(Video).columns}
    assert set(PUBLIC_COLUMNS) <= table
    assert len(set(PUBLIC_COLUMNS)) == len(PUBLIC_COLUMNS)


def test_the_command_lines_columns_are_the_public_ones_less_the_record() -> None:
    assert tuple(c for c in PUBLIC_COLUMNS if c != RECORD) == LISTED_COLUMNS
    assert len(LISTED_COLUMNS) == 23 and LISTED_COLUMNS[-1] == "abandon_reason"
    assert render.LISTED_COLUMNS is LISTED_COLUMNS


def test_the_webhook_body_is_the_public_columns_less_the_schedule() -> None:
    assert tuple(c for c in PUBLIC_COLUMNS if c not in SCHEDULE_COLUMNS) == PAYLOAD_COLUMNS
    assert set(SCHEDULE_COLUMNS) == {"last_polled_at", "next_poll_at"}
    assert len(PAYLOAD_COLUMNS) == 22 and PAYLOAD_COLUMNS[-1] == RECORD
    assert webhooks.PAYLOAD_COLUMNS is PAYLOAD_COLUMNS


def test_an_exclusion_must_name_public_columns() -> None:
    assert columns.without(()) == PUBLIC_COLUMNS
    with pytest.raises(ValueError, match="claim_token"):
        columns.without({"claim_token"})

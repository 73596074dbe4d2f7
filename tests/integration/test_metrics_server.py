"""The /metrics server on a real socket: a port that is taken is one clear line, not a crash."""

from __future__ import annotations

import logging
import socket

import pytest

from pixverse_tracker.web.metrics import serve


def test_a_metrics_port_in_use_logs_one_line_naming_the_port_and_the_variable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # where start_http_server listens
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="tracker.metrics"):
            served = serve(port, variable="TRACKER_BEAT_METRICS_PORT")
    assert served is False
    (record,) = [r for r in caplog.records if r.name == "tracker.metrics"]
    # the line, wherever the log handler looks for it: the message or the event's fields
    shown = f"{record.getMessage()} {getattr(record, 'fields', '')}"
    assert f"metrics port {port} (TRACKER_BEAT_METRICS_PORT) is already in use" in shown

"""Metrics exposition and the status --watch screen (pure parts, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from rich.console import Console

from worker import metrics
from worker.cli import watch_view
from worker.store import Summary

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _summary(**changes: object) -> Summary:
    values: dict[str, object] = dict(
        now=NOW,
        counts={"pending": 7, "done": 40, "abandoned": 2},
        due_now=3,
        oldest_pending_id="user:1-pixverse:a@b.com-video:9",
        oldest_pending_since=NOW - timedelta(minutes=4),
        polls_last_hour=600,
        errors_last_hour=6,
        rate_limited_last_hour=0,
        unauthorized_last_hour=0,
        auth_failing=False,
        auth_error=None,
        auth_failed_at=None,
        auth_paused_until=None,
        throttled_until=None,
        rate_factor=0.5,
        last_dispatch_at=NOW,
        polls_last_5_minutes=150,
        errors_last_5_minutes=5,
    )
    values.update(changes)
    return Summary(**values)  # type: ignore[arg-type]


def _render(renderable: object) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_watch_screen_shows_counts_rates_and_the_oldest_pending_id() -> None:
    text = _render(watch_view(_summary(), rate_limit=10))
    assert "pending" in text and "7" in text and "40" in text
    assert "30.0" in text  # 150 polls over 5 minutes
    assert "1.0" in text  # 5 errors over 5 minutes
    assert "user:1-pixverse:a@b.com-video:9" in text
    assert "rate 5/s of 10/s" in text
    assert "REJECTS THE TOKEN" not in text


def test_the_watch_screen_shouts_when_the_token_is_rejected() -> None:
    text = _render(watch_view(_summary(auth_failing=True, auth_error="Unauthorized"), 10))
    assert "UPSTREAM REJECTS THE TOKEN: Unauthorized" in text


def test_polls_are_counted_by_outcome_with_their_latency() -> None:
    before = metrics.POLLS.labels(outcome="not_yet")._value.get()
    metrics.record_poll("not_yet", 0.3)
    assert metrics.POLLS.labels(outcome="not_yet")._value.get() == before + 1
    exposition = generate_latest(metrics.REGISTRY).decode()
    assert 'tracker_polls_total{outcome="not_yet"}' in exposition
    assert "tracker_upstream_latency_seconds_bucket" in exposition


def test_table_gauges_come_from_the_reader_and_a_failing_read_reports_database_down() -> None:
    calls = {"n": 0}

    def read() -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("database gone")
        return {"tracker_pending": 7.0, "tracker_auth_paused": 1.0}

    collector = metrics.TableCollector(read, ttl=0)
    first = {m.name: m.samples[0].value for m in collector.collect()}
    assert first == {"tracker_database_up": 1.0, "tracker_pending": 7.0, "tracker_auth_paused": 1.0}
    second = {m.name: m.samples[0].value for m in collector.collect()}
    assert second == {"tracker_database_up": 0.0}


def test_table_gauges_are_cached_between_rapid_scrapes() -> None:
    calls = {"n": 0}

    def read() -> dict[str, float]:
        calls["n"] += 1
        return {"tracker_pending": float(calls["n"])}

    collector = metrics.TableCollector(read, ttl=60)
    list(collector.collect())
    list(collector.collect())
    assert calls["n"] == 1

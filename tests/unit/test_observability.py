"""Metrics exposition and the status --watch screen (pure parts, no database)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from rich.console import Console

from pixverse_tracker.cli.status import (
    contract_lines,
    rate_shown,
    scheduler_line,
    status_lines,
    watch_view,
)
from pixverse_tracker.db.reports import Summary
from pixverse_tracker.service.metrics import (
    LIST_READS,
    OUTCOMES,
    POLLS,
    SCHEDULER_READS,
    STATES,
    Gauge,
    record_request,
)
from pixverse_tracker.settings import load
from pixverse_tracker.web.metrics import TableCollector, registry, unavailable

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


def test_a_rate_is_shown_rounded_as_a_person_reads_it() -> None:
    shown = [rate_shown(r) for r in (3.80011, 5.0, 0.999, 120.04, 12.25, 0.0523, 0.25)]
    assert shown == ["3.8", "5", "1", "120", "12.2", "0.052", "0.25"]
    text = _render(watch_view(_summary(rate_factor=0.760022), rate_limit=5))
    assert "rate 3.8/s of 5/s" in text


def test_the_watch_screen_shouts_when_the_token_is_rejected() -> None:
    text = _render(watch_view(_summary(auth_failing=True, auth_error="Unauthorized"), 10))
    assert "UPSTREAM REJECTS THE TOKEN: Unauthorized" in text


def _value(counter: object, **labels: str) -> float:
    return float(counter.labels(**labels)._value.get())  # type: ignore[attr-defined]


def test_polls_are_counted_by_outcome_with_their_latency() -> None:
    before = _value(POLLS, outcome="not_yet")
    record_request("video", "not_yet", 0.3)
    assert _value(POLLS, outcome="not_yet") == before + 1
    exposition = generate_latest(registry()).decode()
    assert 'tracker_polls_total{outcome="not_yet"}' in exposition
    assert 'tracker_upstream_latency_seconds_bucket{endpoint="video",le="0.5"}' in exposition


def test_list_pages_and_scheduler_reads_have_counters_of_their_own_not_polls() -> None:
    polls = sum(_value(POLLS, outcome=k) for k in OUTCOMES["video"])
    pages = _value(LIST_READS, outcome="page")
    reads = _value(SCHEDULER_READS, outcome="scheduler")
    record_request("list", "page", 0.2)
    record_request("scheduler", "scheduler", 0.1)
    assert _value(LIST_READS, outcome="page") == pages + 1
    assert _value(SCHEDULER_READS, outcome="scheduler") == reads + 1
    assert sum(_value(POLLS, outcome=k) for k in OUTCOMES["video"]) == polls


def test_every_known_outcome_is_a_series_from_the_start_so_alerts_can_rate_it() -> None:
    exposition = generate_latest(registry()).decode()
    for name in (
        "tracker_polls_total",
        "tracker_list_reads_total",
        "tracker_scheduler_reads_total",
    ):
        assert f'{name}{{outcome="rate_limited"}}' in exposition
    assert 'tracker_videos_finished_total{state="done"}' in exposition
    assert 'tracker_webhooks_total{result="failed"}' in exposition


def _table() -> list[Gauge]:
    return [
        ("tracker_videos", {"state": s}, float(n)) for s, n in zip(STATES, (7, 40, 2), strict=True)
    ]


def test_beat_serves_the_table_and_process_metrics_but_no_empty_worker_metrics() -> None:
    exposition = generate_latest(registry(_table, work=False)).decode()
    assert 'tracker_videos{state="pending"} 7.0' in exposition
    assert 'tracker_videos{state="done"} 40.0' in exposition
    assert "tracker_database_up 1.0" in exposition
    assert "process_cpu_seconds_total" in exposition  # the process collector
    assert "python_info{" in exposition  # the platform collector
    assert "tracker_upstream_latency_seconds" not in exposition
    assert "tracker_polls_total" not in exposition


def test_a_worker_serves_its_counters_and_process_metrics_but_no_table_gauges() -> None:
    exposition = generate_latest(registry()).decode()
    assert "tracker_polls_total" in exposition
    assert "process_resident_memory_bytes" in exposition
    assert "tracker_videos{" not in exposition


def test_table_gauges_come_from_the_reader_and_a_failing_read_reports_database_down() -> None:
    calls = {"n": 0}

    def read() -> list[Gauge]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("database gone")
        return [*_table(), ("tracker_auth_paused", {}, 1.0)]

    collector = TableCollector(read, ttl=0)
    first = {
        (s.name, s.labels.get("state")): s.value for m in collector.collect() for s in m.samples
    }
    assert first == {
        ("tracker_database_up", None): 1.0,
        ("tracker_videos", "pending"): 7.0,
        ("tracker_videos", "done"): 40.0,
        ("tracker_videos", "abandoned"): 2.0,
        ("tracker_auth_paused", None): 1.0,
    }
    second = {m.name: m.samples[0].value for m in collector.collect()}
    assert second == {"tracker_database_up": 0.0}


def test_table_gauges_are_cached_between_rapid_scrapes() -> None:
    calls = {"n": 0}

    def read() -> list[Gauge]:
        calls["n"] += 1
        return [("tracker_due", {}, float(calls["n"]))]

    collector = TableCollector(read, ttl=60)
    list(collector.collect())
    list(collector.collect())
    assert calls["n"] == 1


def test_a_metrics_port_that_cannot_be_had_is_one_line_naming_the_port_and_the_variable() -> None:
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    line = unavailable(9809, "TRACKER_BEAT_METRICS_PORT", in_use)
    assert line.startswith("metrics port 9809 (TRACKER_BEAT_METRICS_PORT) is already in use")
    assert "\n" not in line
    denied = OSError(errno.EACCES, "Permission denied")
    line = unavailable(80, "TRACKER_METRICS_PORT", denied)
    assert line.startswith(
        "metrics port 80 (TRACKER_METRICS_PORT) cannot be opened: Permission denied"
    )


# --- the latency contract and the scheduler read, as status shows them -----------------------

DEFAULTS = load({})  # the production defaults: a 15 s cap, the scheduler read on


def test_status_says_the_latency_bound_holds_when_nothing_stretches_it() -> None:
    lines = status_lines(_summary(), 5.0, DEFAULTS)
    assert "latency bound: every pending id looked at within 15s once it may be done" in lines


def test_status_says_loudly_while_a_401_or_429_pause_stretches_the_bound() -> None:
    paused = _summary(auth_failing=True, auth_paused_until=NOW + timedelta(seconds=40))
    (line,) = contract_lines(paused, DEFAULTS)
    assert line.startswith("LATENCY BOUND STRETCHED by a 401 pause until")
    throttled = _summary(throttled_until=NOW + timedelta(seconds=10))
    (line,) = contract_lines(throttled, DEFAULTS)
    assert line.startswith("LATENCY BOUND STRETCHED by a 429 throttle until")
    # a pause that is over stretches nothing
    over = _summary(throttled_until=NOW - timedelta(seconds=1))
    assert contract_lines(over, DEFAULTS)[0].startswith("latency bound:")


def test_status_says_when_ids_are_overdue_past_the_bound() -> None:
    (line,) = contract_lines(_summary(overdue=12), DEFAULTS)
    assert line.startswith("LATENCY BOUND MISSED for 12 pending ids (due more than 15s ago)")


def test_status_shows_what_the_scheduler_read_is_doing() -> None:
    assert scheduler_line(_summary(), DEFAULTS).startswith("scheduler read: none yet")
    ok = _summary(scheduler_ok_at=NOW - timedelta(seconds=2), scheduler_executing=31)
    assert scheduler_line(ok, DEFAULTS) == (
        "scheduler read: 2s ago, 31 pending ids executing (no other request needed for them)"
    )
    failing = _summary(
        scheduler_failures=3,
        scheduler_read_at=NOW - timedelta(seconds=9),
        scheduler_error="HTTP 503",
    )
    assert scheduler_line(failing, DEFAULTS).startswith("scheduler read: FAILING (3 in a row")
    off = load({"TRACKER_SCHEDULER": "false"})
    assert scheduler_line(ok, off).startswith("scheduler read: off")


def test_the_watch_screen_shows_the_scheduler_and_the_bound() -> None:
    text = _render(watch_view(_summary(overdue=2), 10, DEFAULTS))
    assert "scheduler read: none yet" in text
    assert "LATENCY BOUND MISSED for 2 pending ids" in text


# --- what status says about the token ---------------------------------------------------------


def test_status_calls_the_token_accepted_only_once_upstream_answers_prove_it() -> None:
    lines = status_lines(_summary(), 5.0, DEFAULTS)  # 600 polls, 6 errors in the last hour
    assert (
        "upstream token: accepted (594 answers in the last hour; no 401 since the last success)"
        in lines
    )
    # nothing answered: no polls, or only errors, 429s and 401s (none of which proves it)
    for polls, errors, limited, refused in ((0, 0, 0, 0), (9, 5, 3, 1)):
        quiet = _summary(
            polls_last_hour=polls,
            errors_last_hour=errors,
            rate_limited_last_hour=limited,
            unauthorized_last_hour=refused,
        )
        with_token = load({"USEAPI_TOKEN": "t"})
        assert "upstream token: not proven (no upstream answer in the last hour)" in status_lines(
            quiet, 5.0, with_token
        )
        assert not [line for line in status_lines(quiet, 5.0, DEFAULTS) if "accepted" in line]
        assert (
            "upstream token: not proven (no upstream answer in the last hour); "
            "USEAPI_TOKEN is not set here"
        ) in status_lines(quiet, 5.0, DEFAULTS)

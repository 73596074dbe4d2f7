"""Unit tests for pixverse_tracker.settings: every variable parsed from a plain dict, never os.environ."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixverse_tracker.settings import (
    DATABASE,
    DEFAULT_BASE_URL,
    EMBEDDED_BROKER_URL,
    Secret,
    Settings,
    SettingsError,
    load,
    normalize_database_url,
)

TOKEN = "tok-Zq81-DISTINCTIVE-5ecr3t-77aa"


def load_with(**env: str) -> Settings:
    return load(dict(env))


def error_for(**env: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load(dict(env))
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# defaults
# ---------------------------------------------------------------------------------------------


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    s = load({})
    assert s.useapi_token == Secret("")
    assert s.useapi_base_url == DEFAULT_BASE_URL == "https://api.useapi.net"
    assert s.allow_insecure_upstream is False
    assert s.data_dir == Path(".pixverse-tracker")
    assert s.database_url == "sqlite:///.pixverse-tracker/tracker.db"
    assert s.broker_url == "memory://" == EMBEDDED_BROKER_URL
    assert s.embedded is True
    assert s.is_sqlite is True
    assert (s.dispatch_interval, s.first_poll_delay) == (5.0, 15.0)
    assert (s.poll_interval_min, s.poll_interval_max, s.poll_jitter) == (15.0, 15.0, 0.2)
    assert (s.scheduler_enabled, s.scheduler_interval) == (True, 3.0)
    assert s.give_up_after == 21600.0
    assert s.rate_limit == 5.0
    assert (s.http_connect_timeout, s.http_timeout) == (5.0, 20.0)
    assert s.max_body_bytes == 1_048_576
    # a claim lasts its slot + one dispatch interval + connect + read timeout: 5 + 5 + 20
    assert s.lease == 30.0
    assert s.task_time_limit == 5 + (40 + 2) * 25 + 5  # listing.MAX_CHAIN_PAGES deep
    assert (s.batch_size, s.poll_concurrency, s.worker_concurrency) == (25, 8, 4)
    assert (s.auth_pause, s.rate_limit_pause, s.rate_recovery) == (60.0, 15.0, 60.0)
    assert s.log_level == "INFO"


def test_the_embedded_database_lives_under_the_data_dir() -> None:
    s = load_with(TRACKER_DATA_DIR="/srv/tracker")
    assert s.data_dir == Path("/srv/tracker")
    assert s.database_url == "sqlite:////srv/tracker/tracker.db"
    assert s.embedded is True


def test_blank_values_fall_back_to_the_defaults() -> None:
    s = load_with(TRACKER_RATE_LIMIT="   ", TRACKER_BATCH_SIZE="", DATABASE_URL="  ")
    assert (s.rate_limit, s.batch_size) == (5.0, 25)
    assert s.is_sqlite is True


def test_values_are_read_with_surrounding_whitespace_trimmed() -> None:
    s = load_with(
        TRACKER_RATE_LIMIT=" 2.5 ", TRACKER_BATCH_SIZE=" 100\n", TRACKER_LOG_LEVEL=" debug "
    )
    assert (s.rate_limit, s.batch_size, s.log_level) == (2.5, 100, "DEBUG")


def test_a_broker_url_turns_off_embedded_mode() -> None:
    s = load_with(CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.embedded is False


# ---------------------------------------------------------------------------------------------
# the database
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql://tracker@db.internal/pixverse",
            "postgresql+psycopg2://tracker@db.internal/pixverse",
        ),
        ("postgres://u:p@db:5432/x", "postgresql+psycopg2://u:p@db:5432/x"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:///tmp/t.db", "sqlite:///tmp/t.db"),
    ],
)
def test_database_urls_are_pinned_to_psycopg2(given: str, expected: str) -> None:
    s = load_with(DATABASE_URL=given)
    assert s.database_url == expected
    assert s.is_sqlite is expected.startswith("sqlite")


def test_normalize_leaves_other_urls_alone() -> None:
    assert normalize_database_url("sqlite:///a.db") == "sqlite:///a.db"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db", "db.sqlite"])
def test_an_unsupported_database_is_refused_naming_database_url(url: str) -> None:
    message = error_for(DATABASE_URL=url)
    assert message.startswith("DATABASE_URL uses ")
    assert "postgresql://" in message


def test_the_mysql_refusal_names_the_scheme() -> None:
    assert error_for(DATABASE_URL="mysql://u@h/db").startswith("DATABASE_URL uses 'mysql'")


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------

# (variable, below its range, above its range, a valid value, the attribute, its parsed value)
NUMBERS = [
    ("TRACKER_DISPATCH_INTERVAL", "0.05", "3601", "2", "dispatch_interval", 2.0),
    ("TRACKER_FIRST_POLL_DELAY", "-1", "86401", "0", "first_poll_delay", 0.0),
    ("TRACKER_POLL_INTERVAL_MIN", "0.05", "86401", "10", "poll_interval_min", 10.0),
    ("TRACKER_POLL_INTERVAL_MAX", "0.05", "86401", "120", "poll_interval_max", 120.0),
    ("TRACKER_POLL_JITTER", "-0.1", "0.95", "0.9", "poll_jitter", 0.9),
    ("TRACKER_GIVE_UP_AFTER", "0.5", "31536001", "1800", "give_up_after", 1800.0),
    ("TRACKER_RATE_LIMIT", "0.001", "10001", "0.5", "rate_limit", 0.5),
    ("TRACKER_HTTP_CONNECT_TIMEOUT", "0.01", "301", "3", "http_connect_timeout", 3.0),
    ("TRACKER_HTTP_TIMEOUT", "0.01", "601", "10", "http_timeout", 10.0),
    ("TRACKER_MAX_BODY_BYTES", "1023", "536870913", "2048", "max_body_bytes", 2048),
    ("TRACKER_BATCH_SIZE", "0", "10001", "50", "batch_size", 50),
    ("TRACKER_POLL_CONCURRENCY", "0", "257", "16", "poll_concurrency", 16),
    ("TRACKER_WORKER_CONCURRENCY", "0", "257", "2", "worker_concurrency", 2),
    ("TRACKER_AUTH_PAUSE", "0.05", "86401", "30", "auth_pause", 30.0),
    ("TRACKER_RATE_LIMIT_PAUSE", "0.05", "3601", "20", "rate_limit_pause", 20.0),
    ("TRACKER_RATE_RECOVERY", "0.05", "86401", "120", "rate_recovery", 120.0),
    ("TRACKER_LIST_INTERVAL", "0.05", "3601", "5", "list_interval", 5.0),
    ("TRACKER_LIST_PAGE_SIZE", "0", "101", "20", "list_page_size", 20),
    ("TRACKER_LIST_MAX_PAGES", "0", "51", "5", "list_max_pages", 5),
    ("TRACKER_LIST_RETRY", "-1", "2592001", "600", "list_retry", 600.0),
    ("TRACKER_TYPICAL_DURATION", "0.5", "86401", "180", "typical_duration", 180.0),
    ("TRACKER_SCHEDULER_INTERVAL", "0.4", "3601", "2", "scheduler_interval", 2.0),
]
NAMES = [n[0] for n in NUMBERS]
WHOLE = {
    "TRACKER_MAX_BODY_BYTES",
    "TRACKER_BATCH_SIZE",
    "TRACKER_POLL_CONCURRENCY",
    "TRACKER_WORKER_CONCURRENCY",
    "TRACKER_LIST_PAGE_SIZE",
    "TRACKER_LIST_MAX_PAGES",
}


@pytest.mark.parametrize(("name", "_low", "_high", "good", "attr", "value"), NUMBERS, ids=NAMES)
def test_every_number_is_read_from_its_variable(
    name: str, _low: str, _high: str, good: str, attr: str, value: float
) -> None:
    s = load({name: good})
    assert getattr(s, attr) == value
    assert type(getattr(s, attr)) is type(value)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["abc", "12s", "1,5", "0x10"])
def test_a_non_number_is_refused_naming_the_variable(name: str, bad: str) -> None:
    message = error_for(**{name: bad})
    kind = "a whole number" if name in WHOLE else "a number"
    assert message == f"{name}={bad!r} is not {kind}"


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_a_fraction_is_refused_where_a_whole_number_is_needed(name: str) -> None:
    assert error_for(**{name: "10.5"}) == f"{name}='10.5' is not a whole number"


@pytest.mark.parametrize(("name", "low", "high", "_good", "_attr", "_value"), NUMBERS, ids=NAMES)
def test_out_of_range_values_are_refused_naming_the_variable(
    name: str, low: str, high: str, _good: str, _attr: str, _value: float
) -> None:
    for bad in (low, high):
        message = error_for(**{name: bad})
        assert message.startswith(f"{name}={bad!r} is out of range: it must be between ")


@pytest.mark.parametrize("name", sorted(set(NAMES) - WHOLE))
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_nan_and_infinity_are_refused_naming_the_variable(name: str, bad: str) -> None:
    assert error_for(**{name: bad}).startswith(f"{name}={bad!r} is out of range")


def test_the_range_in_the_message_is_the_real_one() -> None:
    assert error_for(TRACKER_BATCH_SIZE="0") == (
        "TRACKER_BATCH_SIZE='0' is out of range: it must be between 1 and 10000"
    )


def test_a_minimum_interval_above_the_maximum_is_refused() -> None:
    message = error_for(TRACKER_POLL_INTERVAL_MIN="61", TRACKER_POLL_INTERVAL_MAX="60")
    assert message == "TRACKER_POLL_INTERVAL_MIN (61) is larger than TRACKER_POLL_INTERVAL_MAX (60)"


def test_equal_minimum_and_maximum_intervals_are_fine() -> None:
    s = load_with(TRACKER_POLL_INTERVAL_MIN="30", TRACKER_POLL_INTERVAL_MAX="30")
    assert (s.poll_interval_min, s.poll_interval_max) == (30.0, 30.0)


def test_the_old_lease_setting_is_ignored_with_a_notice() -> None:
    s = load_with(TRACKER_LEASE="8")
    assert s.lease == load({}).lease
    assert len(s.notices) == 1 and s.notices[0].startswith("TRACKER_LEASE is no longer used")
    assert load({}).notices == ()


def test_the_lease_follows_the_dispatch_interval_and_the_timeouts() -> None:
    s = load_with(
        TRACKER_DISPATCH_INTERVAL="2", TRACKER_HTTP_CONNECT_TIMEOUT="3", TRACKER_HTTP_TIMEOUT="10"
    )
    assert s.request_budget == 13.0
    assert s.lease == 15.0


@pytest.mark.parametrize("cap", ["3", "600"])
def test_the_cap_alone_is_accepted_and_the_defaults_that_depend_on_it_follow(cap: str) -> None:
    s = load_with(TRACKER_POLL_INTERVAL_MAX=cap)
    assert s.poll_interval_max == float(cap)
    assert s.poll_interval_min == min(15.0, float(cap))
    assert s.list_interval == min(10.0, float(cap))
    assert s.slow_interval == max(300.0, float(cap))


def test_a_set_minimum_above_a_set_maximum_is_still_refused() -> None:
    assert error_for(TRACKER_POLL_INTERVAL_MIN="20", TRACKER_POLL_INTERVAL_MAX="3").startswith(
        "TRACKER_POLL_INTERVAL_MIN (20) is larger than TRACKER_POLL_INTERVAL_MAX (3)"
    )


def test_the_scheduler_read_can_be_turned_off() -> None:
    assert load_with(TRACKER_SCHEDULER="false").scheduler_enabled is False
    assert error_for(TRACKER_SCHEDULER="often").startswith("TRACKER_SCHEDULER='often'")


def test_an_unknown_log_level_is_refused_naming_the_variable() -> None:
    assert error_for(TRACKER_LOG_LEVEL="loud") == "TRACKER_LOG_LEVEL='LOUD' is not a log level"


def test_a_non_boolean_insecure_flag_is_refused_naming_the_variable() -> None:
    message = error_for(TRACKER_ALLOW_INSECURE_UPSTREAM="maybe")
    assert message == "TRACKER_ALLOW_INSECURE_UPSTREAM='maybe' is not a boolean: use true or false"


# ---------------------------------------------------------------------------------------------
# the upstream URL
# ---------------------------------------------------------------------------------------------


def test_plain_http_to_a_remote_host_is_refused() -> None:
    message = error_for(USEAPI_BASE_URL="http://api.useapi.net")
    assert message.startswith(
        "USEAPI_BASE_URL='http://api.useapi.net' is plain http to a remote host"
    )
    assert "TRACKER_ALLOW_INSECURE_UPSTREAM=true" in message


def test_a_remote_host_named_like_localhost_is_still_remote() -> None:
    assert "plain http" in error_for(USEAPI_BASE_URL="http://localhost.evil.example")


def test_plain_http_to_a_remote_host_is_allowed_when_asked_for_explicitly() -> None:
    s = load_with(USEAPI_BASE_URL="http://proxy.lan:8080", TRACKER_ALLOW_INSECURE_UPSTREAM="true")
    assert s.useapi_base_url == "http://proxy.lan:8080"
    assert s.allow_insecure_upstream is True


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:9000/", "http://localhost:9000"),
        ("http://LOCALHOST", "http://LOCALHOST"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://api.useapi.net/", "https://api.useapi.net"),
        ("https://gateway.example/useapi", "https://gateway.example/useapi"),
    ],
)
def test_https_and_loopback_http_are_accepted(given: str, expected: str) -> None:
    assert load_with(USEAPI_BASE_URL=given).useapi_base_url == expected


@pytest.mark.parametrize("url", ["ftp://api.useapi.net", "api.useapi.net", "https://"])
def test_a_base_url_that_is_not_http_is_refused_naming_the_variable(url: str) -> None:
    assert error_for(USEAPI_BASE_URL=url) == f"USEAPI_BASE_URL={url!r} is not an http(s) URL"


def test_a_base_url_with_a_query_is_refused() -> None:
    message = error_for(USEAPI_BASE_URL="https://api.useapi.net/?x=1")
    assert (
        message == "USEAPI_BASE_URL='https://api.useapi.net/?x=1' must not have a query or fragment"
    )


def test_a_malformed_base_url_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="^USEAPI_BASE_URL="):
        load_with(USEAPI_BASE_URL="http://[::1")


# ---------------------------------------------------------------------------------------------
# the token
# ---------------------------------------------------------------------------------------------


def test_the_token_is_read_trimmed_and_revealed_only_on_request() -> None:
    s = load_with(USEAPI_TOKEN=f"  {TOKEN}\n")
    assert s.require_token() == TOKEN
    assert s.useapi_token.reveal() == TOKEN


def test_the_token_never_shows_in_repr_or_str() -> None:
    s = load_with(USEAPI_TOKEN=TOKEN)
    for text in (repr(s), str(s), repr(s.useapi_token), str(s.useapi_token), f"{s.useapi_token}"):
        assert TOKEN not in text
        assert "5ecr3t" not in text
    assert "useapi_token=Secret('********')" in repr(s)


def test_a_missing_token_is_shown_as_empty_not_as_stars() -> None:
    assert "useapi_token=Secret('')" in repr(load({}))


def test_require_token_without_a_token_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="^USEAPI_TOKEN is not set"):
        load({}).require_token()


def test_a_blank_token_counts_as_missing() -> None:
    with pytest.raises(SettingsError, match="USEAPI_TOKEN"):
        load_with(USEAPI_TOKEN="   ").require_token()


def test_the_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_a_slow_interval_shorter_than_the_backoff_cap_is_refused() -> None:
    with pytest.raises(SettingsError, match="TRACKER_SLOW_INTERVAL"):
        load_with(TRACKER_SLOW_INTERVAL="30", TRACKER_POLL_INTERVAL_MAX="60")


def test_the_list_endpoint_and_the_adaptive_schedule_are_on_by_default() -> None:
    s = load_with()
    assert (s.list_enabled, s.list_interval, s.list_page_size, s.list_max_pages) == (
        True,
        10.0,
        40,
        3,
    )
    assert (s.schedule, s.list_retry) == ("adaptive", 3600.0)


def test_the_list_and_the_schedule_can_be_switched_off() -> None:
    s = load_with(TRACKER_LIST="false", TRACKER_SCHEDULE="backoff")
    assert (s.list_enabled, s.schedule) == (False, "backoff")


def test_an_unknown_schedule_is_refused_naming_the_variable() -> None:
    message = error_for(TRACKER_SCHEDULE="smart")
    assert message == "TRACKER_SCHEDULE='smart' must be one of: adaptive, backoff"


def test_a_non_boolean_list_switch_is_refused_naming_the_variable() -> None:
    assert error_for(TRACKER_LIST="sometimes").startswith(
        "TRACKER_LIST='sometimes' is not a boolean"
    )


def test_a_list_interval_longer_than_a_set_bound_is_refused_unless_the_list_is_off() -> None:
    message = error_for(TRACKER_LIST_INTERVAL="90", TRACKER_POLL_INTERVAL_MAX="60")
    assert message.startswith("TRACKER_LIST_INTERVAL (90) is longer than TRACKER_POLL_INTERVAL_MAX")
    assert "TRACKER_LIST=false" in message
    s = load_with(TRACKER_LIST_INTERVAL="90", TRACKER_POLL_INTERVAL_MAX="60", TRACKER_LIST="false")
    assert (s.list_interval, s.poll_interval_max) == (90.0, 60.0)


# ---------------------------------------------------------------------------------------------
# a default never refuses a value the user set
# ---------------------------------------------------------------------------------------------

INTERVALS = {
    "TRACKER_POLL_INTERVAL_MAX": "poll_interval_max",
    "TRACKER_POLL_INTERVAL_MIN": "poll_interval_min",
    "TRACKER_LIST_INTERVAL": "list_interval",
    "TRACKER_SLOW_INTERVAL": "slow_interval",
}


def assert_intervals_fit(s: Settings) -> None:
    assert s.poll_interval_min <= s.poll_interval_max <= s.slow_interval
    assert s.list_interval <= s.poll_interval_max or not s.list_enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRACKER_POLL_INTERVAL_MAX", "3"),
        ("TRACKER_POLL_INTERVAL_MAX", "600"),
        ("TRACKER_POLL_INTERVAL_MAX", "0.1"),
        ("TRACKER_POLL_INTERVAL_MAX", "86400"),
        ("TRACKER_POLL_INTERVAL_MIN", "0.1"),
        ("TRACKER_POLL_INTERVAL_MIN", "86400"),
        ("TRACKER_LIST_INTERVAL", "0.1"),
        ("TRACKER_LIST_INTERVAL", "3600"),
        ("TRACKER_SLOW_INTERVAL", "0.1"),
        ("TRACKER_SLOW_INTERVAL", "86400"),
    ],
)
def test_any_interval_set_alone_is_kept_and_the_defaults_fit_around_it(
    name: str, value: str
) -> None:
    s = load({name: value})
    assert getattr(s, INTERVALS[name]) == float(value)
    assert_intervals_fit(s)


def test_a_minimum_or_a_list_interval_above_the_default_bound_raises_the_bound() -> None:
    assert load_with(TRACKER_POLL_INTERVAL_MIN="20").poll_interval_max == 20.0
    s = load_with(TRACKER_LIST_INTERVAL="90")
    assert (s.poll_interval_max, s.poll_interval_min, s.slow_interval) == (90.0, 15.0, 300.0)
    # with the list off, its interval bounds nothing
    assert load_with(TRACKER_LIST_INTERVAL="90", TRACKER_LIST="false").poll_interval_max == 15.0


def test_a_slow_interval_below_the_default_bound_lowers_the_bound_and_what_sits_under_it() -> None:
    s = load_with(TRACKER_SLOW_INTERVAL="10")
    assert (s.poll_interval_max, s.poll_interval_min, s.list_interval) == (10.0, 10.0, 10.0)


def test_a_long_dispatch_interval_alone_is_accepted_and_the_lease_follows_it() -> None:
    s = load_with(TRACKER_DISPATCH_INTERVAL="100")
    assert s.dispatch_interval == 100.0
    assert s.lease == 100 + 5 + 20
    assert s.task_time_limit > s.lease


def test_two_conflicting_values_give_one_line_naming_both() -> None:
    message = error_for(TRACKER_POLL_INTERVAL_MIN="400", TRACKER_SLOW_INTERVAL="300")
    assert "\n" not in message
    assert message.startswith(
        "TRACKER_POLL_INTERVAL_MIN (400) is longer than TRACKER_SLOW_INTERVAL (300)"
    )


def test_every_problem_is_reported_at_once_one_line_each() -> None:
    message = error_for(
        TRACKER_RATE_LIMIT="fast",
        TRACKER_BATCH_SIZE="0",
        DATABASE_URL="mysql://u@h/db",
        TRACKER_POLL_INTERVAL_MIN="20",
        TRACKER_POLL_INTERVAL_MAX="10",
    )
    lines = message.splitlines()
    assert len(lines) == 4, message
    assert lines[0].startswith("DATABASE_URL uses 'mysql'")
    assert "TRACKER_POLL_INTERVAL_MIN (20) is larger than TRACKER_POLL_INTERVAL_MAX (10)" in lines
    assert "TRACKER_RATE_LIMIT='fast' is not a number" in lines
    assert any(line.startswith("TRACKER_BATCH_SIZE='0' is out of range") for line in lines)


def test_an_unparseable_bound_is_one_problem_not_a_conflict_with_its_neighbours() -> None:
    assert error_for(TRACKER_POLL_INTERVAL_MAX="soon", TRACKER_POLL_INTERVAL_MIN="20") == (
        "TRACKER_POLL_INTERVAL_MAX='soon' is not a number"
    )


INTERVAL_VALUES = st.sampled_from(["0.1", "1", "3", "10", "15", "20", "90", "300", "600", "3600"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(INTERVALS)), INTERVAL_VALUES),
    st.sampled_from(["true", "false"]),
)
def test_set_intervals_are_kept_or_each_conflict_names_two_set_variables(
    chosen: dict[str, str], list_switch: str
) -> None:
    env = {**chosen, "TRACKER_LIST": list_switch}
    try:
        s = load(env)
    except SettingsError as exc:
        for line in str(exc).splitlines():
            named = [name for name in chosen if name in line]
            assert len(named) == 2, line
        return
    for name, value in chosen.items():
        assert getattr(s, INTERVALS[name]) == float(value)
    assert_intervals_fit(s)


# ---------------------------------------------------------------------------------------------
# each command checks only the concerns it uses
# ---------------------------------------------------------------------------------------------

BROKEN_POLLING = {"TRACKER_POLL_INTERVAL_MIN": "20", "TRACKER_POLL_INTERVAL_MAX": "10"}


def test_a_concern_not_needed_is_not_checked_and_takes_its_defaults() -> None:
    env = {**BROKEN_POLLING, "TRACKER_RATE_LIMIT": "9", "DATABASE_URL": "postgresql://u@h/db"}
    s = load(env, needs={DATABASE})
    assert s.database_url == "postgresql+psycopg2://u@h/db"
    defaults = load({})
    assert (s.poll_interval_min, s.poll_interval_max, s.rate_limit) == (
        defaults.poll_interval_min,
        defaults.poll_interval_max,
        defaults.rate_limit,
    )
    with pytest.raises(SettingsError, match="TRACKER_POLL_INTERVAL_MIN"):
        load(env)


def test_a_needed_concern_is_still_checked() -> None:
    with pytest.raises(SettingsError, match="^DATABASE_URL uses 'mysql'[^\n]*$"):
        load({**BROKEN_POLLING, "DATABASE_URL": "mysql://u@h/db"}, needs={DATABASE})


def test_a_concern_without_problems_keeps_the_values_set_even_when_not_needed() -> None:
    assert load({"TRACKER_RATE_LIMIT": "9"}, needs={DATABASE}).rate_limit == 9.0


def test_an_unknown_concern_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown settings concerns"):
        load({}, needs={"databse"})


# ---------------------------------------------------------------------------------------------
# the embedded database is never a surprise
# ---------------------------------------------------------------------------------------------


def test_without_database_url_the_embedded_file_is_marked_and_required_database_refuses() -> None:
    s = load({})
    assert s.embedded_database is True
    assert s.embedded_database_path == Path(".pixverse-tracker/tracker.db")
    with pytest.raises(SettingsError, match="^DATABASE_URL is not set: ") as caught:
        s.require_database()
    assert "sqlite:///.pixverse-tracker/tracker.db" in str(caught.value)


def test_an_explicit_database_url_is_required_database() -> None:
    s = load_with(DATABASE_URL="sqlite:///.pixverse-tracker/tracker.db")
    assert s.embedded_database is False
    assert s.require_database() == "sqlite:///.pixverse-tracker/tracker.db"

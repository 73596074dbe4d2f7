"""Which settings and which database each command uses, through the real CLI (``main``
in this process, on the test Postgres database) and through the Python API."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pixverse_tracker import api
from pixverse_tracker.cli.context import settings_for
from pixverse_tracker.cli.main import main
from pixverse_tracker.jobs.app import celery_config
from pixverse_tracker.service import runtime
from pixverse_tracker.settings import EVERYTHING, SettingsError
from tests.conftest import REDIS_URL

VIDEO = "user:7-pixverse:settings@example.com-video:1"
# Two values a user set that cannot both hold: only the commands that poll may refuse them.
CONFLICT = {"TRACKER_POLL_INTERVAL_MIN": "20", "TRACKER_POLL_INTERVAL_MAX": "10"}
CONFLICT_LINE = "TRACKER_POLL_INTERVAL_MIN (20) is larger than TRACKER_POLL_INTERVAL_MAX (10)"


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """An environment with none of the tracker's variables, in an empty working directory."""
    for name in list(os.environ):
        if name.startswith(("TRACKER_", "USEAPI_")) or name in (
            "DATABASE_URL",
            "CELERY_BROKER_URL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    runtime.reset()

    def setenv(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    yield setenv
    runtime.reset()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    def run_(*args: str) -> Ran:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            runtime.reset()  # the command's connections, before the next command
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run_


def error_lines(ran: Ran) -> list[str]:
    assert ran.code != 0, ran
    lines = ran.err.strip().splitlines()
    assert all(line.startswith("pixverse-tracker: error: ") for line in lines), ran
    return [line.removeprefix("pixverse-tracker: error: ") for line in lines]


def database_commands() -> list[tuple[str, ...]]:
    """Every command that reads or writes videos and ends by itself, in a sensible order."""
    return [
        ("migrate",),
        ("enqueue", VIDEO),
        ("status",),
        ("status", "--json"),
        ("list", "--json"),
        ("show", VIDEO),
        ("prune",),
    ]


# --- settings: a default never refuses a value the user set -------------------------------------


@pytest.mark.parametrize(
    "alone",
    [
        {"TRACKER_POLL_INTERVAL_MAX": "3"},
        {"TRACKER_POLL_INTERVAL_MAX": "600"},
        {"TRACKER_DISPATCH_INTERVAL": "100"},
    ],
    ids=["bound-3", "bound-600", "dispatch-100"],
)
def test_a_bound_or_dispatch_interval_set_alone_is_accepted_by_every_command(
    alone: dict[str, str],
    environment: Callable[..., None],
    run: Callable[..., Ran],
    pg: sessionmaker[Session],
    pg_database: str,
) -> None:
    environment(DATABASE_URL=pg_database, CELERY_BROKER_URL=REDIS_URL, **alone)
    for args in [*database_commands(), ("health",)]:
        ran = run(*args)
        assert ran.code == 0, (args, ran)
    assert json.loads(run("list", "--json").out)[0]["video_id"] == VIDEO
    # worker, beat and run read every setting, then hand them to Celery
    for command in ("worker", "beat", "run"):
        settings = settings_for(command, EVERYTHING)
        assert celery_config(settings)["beat_schedule"]["dispatch"]["schedule"] == (
            settings.dispatch_interval
        )


def test_conflicting_poll_settings_stop_only_the_commands_that_poll(
    environment: Callable[..., None],
    run: Callable[..., Ran],
    pg: sessionmaker[Session],
    pg_database: str,
) -> None:
    environment(DATABASE_URL=pg_database, CELERY_BROKER_URL=REDIS_URL, **CONFLICT)
    for args in database_commands():
        ran = run(*args)
        assert ran.code == 0, (args, ran)
    # health checks every setting a worker would use: one line naming both variables
    for command in ("health", "worker", "beat", "run"):
        assert error_lines(run(command)) == [CONFLICT_LINE], command


def test_three_bad_values_give_three_lines_each_naming_its_variable(
    environment: Callable[..., None], run: Callable[..., Ran], pg_database: str
) -> None:
    environment(
        DATABASE_URL=pg_database,
        TRACKER_RATE_LIMIT="fast",
        TRACKER_BATCH_SIZE="0",
        TRACKER_LOG_LEVEL="loud",
    )
    lines = error_lines(run("worker"))
    assert sorted(lines) == [
        "TRACKER_BATCH_SIZE='0' is out of range: it must be between 1 and 10000",
        "TRACKER_LOG_LEVEL='LOUD' is not a log level",
        "TRACKER_RATE_LIMIT='fast' is not a number",
    ]


# --- the database a command uses is never a surprise ----------------------------------------------


def test_enqueue_without_database_url_refuses_and_writes_no_file(
    environment: Callable[..., None], run: Callable[..., Ran], tmp_path: Path
) -> None:
    environment()
    assert error_lines(run("enqueue", VIDEO)) == [
        "DATABASE_URL is not set and there is no embedded database at "
        ".pixverse-tracker/tracker.db: set DATABASE_URL to the tracker's database "
        "(only `run` creates the embedded one)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["migrate", "worker", "beat"])
def test_migrate_worker_and_beat_without_database_url_refuse_naming_it(
    command: str, environment: Callable[..., None], run: Callable[..., Ran], tmp_path: Path
) -> None:
    # even beside an embedded database: these serve a deployment, whose database is named
    environment(USEAPI_TOKEN="tok", CELERY_BROKER_URL=REDIS_URL)
    (tmp_path / ".pixverse-tracker").mkdir()
    (tmp_path / ".pixverse-tracker" / "tracker.db").write_bytes(b"")
    [line] = error_lines(run(command))
    assert line.startswith(f"DATABASE_URL is not set: `{command}` works on the database you name")


@pytest.mark.parametrize("args", [("status",), ("list",), ("show", VIDEO), ("prune",), ("health",)])
def test_reading_commands_without_database_url_refuse_when_there_is_no_embedded_file(
    args: tuple[str, ...], environment: Callable[..., None], run: Callable[..., Ran], tmp_path: Path
) -> None:
    environment()
    [line] = error_lines(run(*args))
    assert line.startswith("DATABASE_URL is not set and there is no embedded database at ")
    assert list(tmp_path.iterdir()) == []


def test_without_database_url_the_embedded_file_of_run_is_used_and_named(
    environment: Callable[..., None], run: Callable[..., Ran], tmp_path: Path
) -> None:
    # the file `run` would have made here (an explicit sqlite:// URL is always accepted)
    environment(DATABASE_URL="sqlite:///.pixverse-tracker/tracker.db")
    assert run("migrate").code == 0
    os.environ.pop("DATABASE_URL")
    note = "pixverse-tracker: using the embedded database .pixverse-tracker/tracker.db"
    enqueued = run("enqueue", VIDEO)
    assert enqueued.code == 0, enqueued
    assert enqueued.err.startswith(note), enqueued
    listed = run("list", "--json")
    assert listed.err.startswith(note), listed
    assert [row["video_id"] for row in json.loads(listed.out)] == [VIDEO]


# --- the Python API --------------------------------------------------------------------------------


def test_the_api_without_database_url_refuses_and_writes_no_file(
    environment: Callable[..., None], tmp_path: Path
) -> None:
    environment()
    for call in (lambda: api.enqueue([VIDEO]), lambda: api.get(VIDEO)):
        with pytest.raises(SettingsError, match="^DATABASE_URL is not set: "):
            call()
    assert list(tmp_path.iterdir()) == []


def test_the_api_is_not_stopped_by_poll_settings_it_does_not_use(
    environment: Callable[..., None], pg: sessionmaker[Session], pg_database: str
) -> None:
    environment(DATABASE_URL=pg_database, **CONFLICT)
    assert api.enqueue([VIDEO]).added == [VIDEO]
    video = api.get(VIDEO)
    assert video is not None and video.state == "pending"
    # a task in the same process checks every setting before it polls
    with pytest.raises(SettingsError, match=CONFLICT_LINE.replace("(", r"\(").replace(")", r"\)")):
        runtime.get()

"""Acceptance tests for the ``pixverse-tracker`` command, run as a real subprocess.

Each test checks what a user sees (exit status, the key phrases of stdout/stderr) and what the
command did to the database. Postgres tests use the session's throwaway database (emptied per
test) through the plain ``postgresql://`` URL users write; embedded tests run in an empty
temporary directory with no ``DATABASE_URL``, so the SQLite default lands under it.

Every command start costs about a second of imports, so independent read-only calls run
concurrently and the demo plays in the background while the other tests run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from pixverse_tracker.cli.main import build_parser
from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.db.revisions import VERSION_TABLE, upgrade
from pixverse_tracker.testing import CLI, base_env
from tests.conftest import REDIS_URL, empty_database, reset_tables

# Set as USEAPI_TOKEN for every Postgres-backed call: cli() checks it never comes back.
SECRET_TOKEN = "tok-CLI-9f4e1b7a-must-never-be-printed"

PUBLIC_COLUMNS = [
    "video_id", "state", "status_code", "status_name", "status_final", "url", "first_frame",
    "prompt", "model", "duration", "output_width", "output_height", "upstream_created_at",
    "enqueued_at", "updated_at", "last_polled_at", "next_poll_at", "done_at", "poll_count",
    "error_count", "last_http_status", "last_error", "abandon_reason",
]  # fmt: skip
VIDEO_HEADERS = ["VIDEO_ID", "STATE", "STATUS", "POLLS", "ERRORS", "AGE", "URL / REASON"]
DOCUMENTED_COMMANDS = [
    "migrate", "enqueue", "run", "worker", "beat", "status", "list", "show", "prune", "health",
    "push-receiver", "simulate", "demo",
]  # fmt: skip
# Old names that still run, saying so, and that --help does not list.
DEPRECATED_COMMANDS = ["callbacks"]
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/tracker"
NOT_AN_ID = "does not look like user:<n>-pixverse:<email>-video:<n> (or -image:<n>)"


def _parser_commands() -> list[str]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


# every documented command, and any the parser has beyond those
SUBCOMMANDS = DOCUMENTED_COMMANDS + [c for c in _parser_commands() if c not in DOCUMENTED_COMMANDS]


def vid(n: int, email: str = "me@example.com") -> str:
    return f"user:1234-pixverse:{email}-video:{n}"


# --- running the command -------------------------------------------------------------------------


@dataclass(repr=False)
class Result:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def both(self) -> str:
        return self.out + self.err

    def __repr__(self) -> str:  # shown by pytest when an assertion on a Result fails
        return f"exit {self.code}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"

    __str__ = __repr__


def cli(
    *args: str,
    env: dict[str, str],
    cwd: Path,
    stdin: bytes | str | None = None,
    timeout: float = 60,
) -> Result:
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    started = time.monotonic()
    done = subprocess.run(
        [CLI, *args], env=env, cwd=cwd, input=data or b"", capture_output=True, timeout=timeout
    )
    result = Result(
        done.returncode,
        done.stdout.decode("utf-8", errors="replace"),
        done.stderr.decode("utf-8", errors="replace"),
        time.monotonic() - started,
    )
    if env.get("USEAPI_TOKEN") == SECRET_TOKEN:
        # README: the token is "never logged, stored or shown"
        assert SECRET_TOKEN not in result.both, (args, str(result))
        assert "9f4e1b7a" not in result.both, (args, str(result))
    return result


def parallel(*calls: Callable[[], Result]) -> list[Result]:
    """Run independent commands at once (each is mostly interpreter start-up)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: call(), calls))


def assert_one_line_error(result: Result, *phrases: str) -> str:
    """Exit != 0, no traceback, exactly one stderr line ``pixverse-tracker: error: ...``."""
    assert result.code != 0, result
    assert "Traceback" not in result.both, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("pixverse-tracker: error: "), result
    for phrase in phrases:
        assert phrase in lines[0], result
    return lines[0]


def table_rows(output: str) -> list[list[str]]:
    """The text table (header first), cells split on runs of two or more spaces."""
    return [re.split(r" {2,}", line.strip()) for line in output.splitlines() if line.strip()]


def json_ids(result: Result) -> list[str]:
    assert result.code == 0, result
    return [row["video_id"] for row in json.loads(result.out)]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def pg_url(pg_database: str, pg_engine: Engine) -> str:
    """The shared test database, emptied, in the usual ``postgresql://`` form."""
    reset_tables(pg_engine)
    return pg_database.replace("postgresql+psycopg2://", "postgresql://")


@pytest.fixture
def pg_env(pg_url: str) -> dict[str, str]:
    return base_env(DATABASE_URL=pg_url, USEAPI_TOKEN=SECRET_TOKEN)


@pytest.fixture
def empty_pg() -> Iterator[tuple[str, Engine]]:
    """A brand-new Postgres database with no tables at all (dropped afterwards)."""
    with empty_database("pt_cli") as url:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            yield url.replace("postgresql+psycopg2://", "postgresql://"), engine
        finally:
            engine.dispose()


def sql(engine: Engine, statement: str, **params: object) -> list[tuple[object, ...]]:
    with engine.begin() as conn:
        result = conn.execute(text(statement), params)
        return [tuple(row) for row in result] if result.returns_rows else []


def states(engine: Engine) -> dict[str, str]:
    return {str(v): str(s) for v, s in sql(engine, "SELECT video_id, state FROM videos")}


@dataclass
class Background:
    process: subprocess.Popen[bytes]
    cwd: Path
    started: float
    ended: float | None = None

    def watch(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()


@pytest.fixture(scope="module", autouse=True)
def demo_in_background(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Background | None]:
    """``demo --speed 4`` mostly waits on its scenarios: start it first, check it at the end."""
    wanted = any(
        getattr(item, "originalname", "") == "test_demo_finishes_every_scenario"
        for item in request.session.items
    )
    if not wanted:
        yield None
        return
    cwd = tmp_path_factory.mktemp("demo")
    with open(cwd / "stdout.txt", "wb") as out, open(cwd / "stderr.txt", "wb") as err:
        process = subprocess.Popen(
            [CLI, "demo", "--speed", "4"],
            env=base_env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    run = Background(process, cwd, time.monotonic())
    threading.Thread(target=run.watch, name="demo-watch", daemon=True).start()
    yield run
    if process.poll() is None:
        process.kill()
        process.wait()


# --- --help --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def help_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Result], Path]:
    cwd = tmp_path_factory.mktemp("help")
    env = base_env()
    names = ["", *SUBCOMMANDS]
    results = parallel(
        *(
            (lambda name=name: cli(*([name] if name else []), "--help", env=env, cwd=cwd))
            for name in names
        )
    )
    return dict(zip(names, results, strict=True)), cwd


def test_top_level_help_lists_every_command(help_results: tuple[dict[str, Result], Path]) -> None:
    result = help_results[0][""]
    assert result.code == 0, result
    assert result.out.startswith("usage: pixverse-tracker"), result
    for name in DOCUMENTED_COMMANDS:
        assert re.search(rf"^\s+{name}\s", result.out, re.MULTILINE), (name, result)
    for name in DEPRECATED_COMMANDS:
        assert not re.search(rf"^\s+{name}\s", result.out, re.MULTILINE), (name, result)
    assert result.err == ""


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(
    command: str, help_results: tuple[dict[str, Result], Path]
) -> None:
    results, cwd = help_results
    result = results[command]
    assert result.code == 0, result
    assert f"usage: pixverse-tracker {command}" in result.out, result
    assert "Traceback" not in result.both
    assert not (cwd / ".pixverse-tracker").exists(), "--help must not create a database"


def test_the_old_command_names_help_says_it_is_deprecated_and_names_the_new_one(
    help_results: tuple[dict[str, Result], Path],
) -> None:
    result = help_results[0]["callbacks"]
    assert result.code == 0, result
    assert "deprecated: the old name of `push-receiver`" in result.out, result
    for flag in ("--host", "--port", "--server"):  # the same flags as push-receiver's
        assert flag in result.out and flag in help_results[0]["push-receiver"].out


# --- push-receiver, and `callbacks`, its name before 0.2 ------------------------------------------

PUSH_SECRET = "cli-push-secret-4d1f0a9e7b2c"


def test_the_old_callbacks_command_and_secret_variable_still_serve_saying_so_once_each(
    pg_env: dict[str, str], tmp_path: Path
) -> None:
    import requests

    from tests.e2e.private_services import free_port

    video = vid(1)
    assert cli("enqueue", video, env=pg_env, cwd=tmp_path).code == 0
    port = free_port()
    env = dict(pg_env, TRACKER_CALLBACK_SECRET=PUSH_SECRET)
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            [CLI, "callbacks", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, err_path.read_text()
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.2)
        # it serves: the push makes the enqueued id due now, as push-receiver's does
        answer = requests.post(
            f"{base}/callbacks/{PUSH_SECRET}", json={"video_id": video}, timeout=10
        )
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": True, "due_now": True}
    finally:
        process.terminate()
        process.wait(15)
    assert process.returncode == 0, err_path.read_text()
    out_text, err_text = out_path.read_text(), err_path.read_text()
    assert out_text.startswith("receiving pushes: POST "), out_text
    assert err_text.splitlines()[0] == (
        "pixverse-tracker: `callbacks` is deprecated: use `pixverse-tracker push-receiver` "
        "(the old name still works)"
    ), err_text
    assert err_text.count("`callbacks` is deprecated") == 1, err_text
    line = (
        "TRACKER_CALLBACK_SECRET is deprecated: use TRACKER_PUSH_SECRET (the old name still works)"
    )
    assert err_text.count(line) == 1, err_text
    assert PUSH_SECRET not in out_text + err_text
    assert "Traceback" not in err_text


def test_old_and_new_secret_variables_set_differently_is_one_line_naming_both(
    pg_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(pg_env, TRACKER_CALLBACK_SECRET=PUSH_SECRET, TRACKER_PUSH_SECRET=PUSH_SECRET[::-1])
    result = cli("push-receiver", "--port", "0", env=env, cwd=tmp_path)
    line = assert_one_line_error(
        result, "TRACKER_CALLBACK_SECRET and TRACKER_PUSH_SECRET are both set, to different values"
    )
    assert PUSH_SECRET not in result.both and PUSH_SECRET[::-1] not in result.both, line


# --- enqueue -------------------------------------------------------------------------------------


def test_enqueue_arguments_stores_valid_once_and_names_each_invalid_argument(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    a, b = vid(1), vid(2, "sim+completed_5@example.com")
    result = cli("enqueue", a, "x y", b, a, "nope", env=pg_env, cwd=tmp_path)
    assert result.code == 1, result
    assert result.err.splitlines() == [
        "error: argument 2: invalid id 'x y': contains whitespace or control characters",
        f"error: argument 5: invalid id 'nope': {NOT_AN_ID}",
    ], result
    assert result.out.strip() == "enqueued 2 new, re-armed 0, 0 already tracked; refused 2 invalid"
    assert states(pg_engine) == {a: "pending", b: "pending"}
    events = sql(pg_engine, "SELECT video_id, kind FROM video_events ORDER BY id")
    assert sorted(events) == sorted([(a, "enqueued"), (b, "enqueued")])


def test_enqueue_all_valid_exits_0_and_is_idempotent(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    a, image = vid(1), "user:1-pixverse:a.b+c_d-e@mail.example.org-image:77"
    first = cli("enqueue", a, image, env=pg_env, cwd=tmp_path)
    assert first.code == 0, first
    assert first.err == "", first
    assert first.out.strip() == "enqueued 2 new, re-armed 0, 0 already tracked"
    again = cli("enqueue", image, a, env=pg_env, cwd=tmp_path)
    assert again.code == 0, again
    assert again.out.strip() == "enqueued 0 new, re-armed 0, 2 already tracked"
    assert states(pg_engine) == {a: "pending", image: "pending"}
    assert sql(pg_engine, "SELECT count(*) FROM video_events") == [(2,)]


def test_enqueue_webhook_url_and_its_old_name_callback_url_store_the_url(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    new, old, both = vid(9201), vid(9202), vid(9203)
    url = "https://app.example.com/hooks/pixverse"
    by_new, by_old, by_both = parallel(
        lambda: cli("enqueue", "--webhook-url", url, new, env=pg_env, cwd=tmp_path),
        lambda: cli("enqueue", "--callback-url", url, old, env=pg_env, cwd=tmp_path),
        lambda: cli(
            "enqueue", "--webhook-url", url, "--callback-url", url, both, env=pg_env, cwd=tmp_path
        ),
    )
    assert by_new.code == 0 and by_new.err == "", by_new
    # the old flag: the same result, and exactly one line saying what to use instead
    assert by_old.code == 0, by_old
    assert by_old.out == by_new.out
    assert by_old.err.splitlines() == [
        "pixverse-tracker: warning: --callback-url is deprecated, use --webhook-url (same meaning)"
    ]
    assert_one_line_error(by_both, "--callback-url and --webhook-url both given")
    stored = "SELECT video_id, webhook_url FROM videos WHERE video_id IN (:a, :b, :c) ORDER BY 1"
    assert sql(pg_engine, stored, a=new, b=old, c=both) == [(new, url), (old, url)]


def test_enqueue_stdin_trims_skips_blanks_bom_duplicates_and_names_invalid_lines(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    a, b, c = vid(1), vid(2), vid(3)
    stdin = (
        b"\xef\xbb\xbf" + a.encode() + b"\n"  # line 1: a byte-order mark before the first id
        b"\n"  # line 2: blank
        b"   " + b.encode() + b"  \t\r\n"  # line 3: surrounding spaces, CRLF
        b"not an id\n"  # line 4
        + a.encode() + b"\n"  # line 5: duplicate
        b"  \t \n"  # line 6: whitespace only
        b"user:x-pixverse:me@example.com-video:1\n"  # line 7: wrong shape
        b"user:1-pixverse:me@example.com-video:1\x00\n"  # line 8: control character
        + c.encode()  # line 9: no final newline
    )  # fmt: skip
    result = cli("enqueue", "-", env=pg_env, cwd=tmp_path, stdin=stdin)
    assert result.code == 1, result
    assert result.err.splitlines() == [
        "error: line 4: invalid id 'not an id': contains whitespace or control characters",
        f"error: line 7: invalid id 'user:x-pixverse:me@example.com-video:1': {NOT_AN_ID}",
        "error: line 8: invalid id 'user:1-pixverse:me@example.com-video:1\\x00': "
        "contains whitespace or control characters",
    ], result
    assert result.out.strip() == "enqueued 3 new, re-armed 0, 0 already tracked; refused 3 invalid"
    assert states(pg_engine) == {a: "pending", b: "pending", c: "pending"}

    # all-valid stdin (blank lines and spaces only around the ids) exits 0
    fine = cli("enqueue", "-", env=pg_env, cwd=tmp_path, stdin=f"\n  {c}\n\n{vid(4)}  \n\n")
    assert fine.code == 0, fine
    assert fine.err == "", fine
    assert fine.out.strip() == "enqueued 1 new, re-armed 0, 1 already tracked"
    assert len(states(pg_engine)) == 4


def test_enqueue_dash_mixed_with_other_arguments_is_refused(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    result = cli("enqueue", vid(1), "-", env=pg_env, cwd=tmp_path, stdin=vid(2) + "\n")
    assert_one_line_error(result, "`-`", "only argument")
    assert result.out == "", result
    assert states(pg_engine) == {}, "nothing may be stored when the call is refused"


def test_enqueue_only_invalid_ids_never_touches_the_database(tmp_path: Path) -> None:
    # validation comes first: with only invalid ids, an unreachable database does not matter
    env = base_env(DATABASE_URL=UNREACHABLE)
    result = cli("enqueue", "bad id", "", env=env, cwd=tmp_path)
    assert result.code == 1, result
    assert result.err.splitlines() == [
        "error: argument 1: invalid id 'bad id': contains whitespace or control characters",
        "error: argument 2: invalid id '': is empty",
    ], result
    assert result.out.strip() == "enqueued 0 new, re-armed 0, 0 already tracked; refused 2 invalid"


def test_enqueue_does_not_reset_finished_rows_unless_retrack(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    done, abandoned, pending, new = vid(1), vid(2), vid(3), vid(4)
    assert cli("enqueue", done, abandoned, pending, env=pg_env, cwd=tmp_path).code == 0
    sql(
        pg_engine,
        "UPDATE videos SET state = 'done', done_at = now() - interval '1 hour', "
        "enqueued_at = now() - interval '2 hours', status_code = 1, status_name = 'COMPLETED', "
        "status_final = true, url = 'https://media.example/1.mp4', poll_count = 7, "
        "next_poll_at = NULL WHERE video_id = :v",
        v=done,
    )
    sql(
        pg_engine,
        "UPDATE videos SET state = 'abandoned', updated_at = now() - interval '1 hour', "
        "abandon_reason = 'rejected: Invalid video_id', poll_count = 1, next_poll_at = NULL "
        "WHERE video_id = :v",
        v=abandoned,
    )
    snapshot = "SELECT * FROM videos ORDER BY video_id"
    before = sql(pg_engine, snapshot)

    plain = cli("enqueue", done, abandoned, pending, env=pg_env, cwd=tmp_path)
    assert plain.code == 0, plain
    assert plain.out.strip() == "enqueued 0 new, re-armed 0, 3 already tracked"
    assert sql(pg_engine, snapshot) == before, "a plain enqueue must not touch existing rows"

    retrack = cli("enqueue", "--retrack", done, abandoned, pending, new, env=pg_env, cwd=tmp_path)
    assert retrack.code == 0, retrack
    assert retrack.out.strip() == "enqueued 1 new, re-armed 2, 1 already tracked"
    assert states(pg_engine) == {v: "pending" for v in (done, abandoned, pending, new)}
    rows = sql(
        pg_engine,
        "SELECT done_at, abandon_reason, poll_count, next_poll_at IS NOT NULL, "
        "enqueued_at > now() - interval '1 minute' FROM videos WHERE video_id IN (:a, :b)",
        a=done,
        b=abandoned,
    )
    assert rows == [(None, None, 0, True, True)] * 2
    kinds = sql(
        pg_engine,
        "SELECT video_id, kind FROM video_events WHERE kind <> 'enqueued' ORDER BY video_id",
    )
    assert kinds == [(done, "retracked"), (abandoned, "retracked")]


def test_enqueue_ten_thousand_ids_from_stdin(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    many = [vid(n, f"bulk{n % 7}@example.com") for n in range(10_000)]
    stdin = "\n".join(many[:5000]) + "\n\n" + "\n".join(many[5000:]) + "\n"
    result = cli("enqueue", "-", env=pg_env, cwd=tmp_path, stdin=stdin)
    assert result.code == 0, result
    assert result.err == "", result
    assert result.out.strip() == "enqueued 10000 new, re-armed 0, 0 already tracked"
    assert {v for (v,) in sql(pg_engine, "SELECT video_id FROM videos")} == set(many)
    assert sql(pg_engine, "SELECT count(*) FROM videos") == [(10_000,)]
    assert sql(pg_engine, "SELECT count(*) FROM video_events WHERE kind = 'enqueued'") == [
        (10_000,)
    ]


# --- errors are one line -------------------------------------------------------------------------

CONFIG_ERRORS = {
    # `run` polls, so it checks the rate (`status` does not poll and ignores it)
    "bad-setting": (
        {"TRACKER_RATE_LIMIT": "fast"},
        ("run",),
        ("TRACKER_RATE_LIMIT='fast' is not a number",),
    ),
    "mysql-url": (
        {"DATABASE_URL": "mysql://root@127.0.0.1/tracker"},
        ("list",),
        ("DATABASE_URL", "'mysql'"),
    ),
    "no-server-status": ({"DATABASE_URL": UNREACHABLE}, ("status",), ("cannot use the database",)),
    "no-server-enqueue": (
        {"DATABASE_URL": UNREACHABLE},
        ("enqueue", vid(1)),
        ("cannot use the database",),
    ),
}


@pytest.fixture(scope="module")
def config_error_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Result, Path]]:
    cwds = {name: tmp_path_factory.mktemp(name) for name in CONFIG_ERRORS}
    results = parallel(
        *(
            (lambda name=name, env=env, args=args: cli(*args, env=base_env(**env), cwd=cwds[name]))
            for name, (env, args, _) in CONFIG_ERRORS.items()
        )
    )
    return {name: (r, cwds[name]) for name, r in zip(CONFIG_ERRORS, results, strict=True)}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_configuration_and_connection_errors_are_one_line(
    case: str, config_error_results: dict[str, tuple[Result, Path]]
) -> None:
    result, cwd = config_error_results[case]
    assert_one_line_error(result, *CONFIG_ERRORS[case][2])
    assert result.code == 1, result
    assert result.out == "", result
    assert not (cwd / ".pixverse-tracker").exists(), "no embedded database on a bad setting"


def test_show_unknown_id_and_list_since_garbage_are_one_line(
    pg_env: dict[str, str], tmp_path: Path
) -> None:
    show, since = parallel(
        lambda: cli("show", vid(424242), env=pg_env, cwd=tmp_path),
        lambda: cli("list", "--since", "garbage", env=pg_env, cwd=tmp_path),
    )
    assert_one_line_error(show, repr(vid(424242)), "is not tracked")
    assert show.out == ""
    assert_one_line_error(since, "--since 'garbage'", "ISO-8601")
    assert since.out == ""


def test_unmigrated_postgres_says_to_run_migrate_then_migrate_twice(
    empty_pg: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = empty_pg
    env = base_env(DATABASE_URL=url)
    refused = parallel(
        lambda: cli("status", env=env, cwd=tmp_path),
        lambda: cli("enqueue", vid(1), env=env, cwd=tmp_path),
    )
    for result in refused:
        assert_one_line_error(result, "run `pixverse-tracker migrate`")
    # "Postgres is only ever changed by migrate": nothing above created a table
    assert sql(engine, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]

    first = cli("migrate", env=env, cwd=tmp_path)
    assert first.code == 0, first
    assert re.fullmatch(r"schema migrated from empty to \S+", first.out.strip()), first
    revision = first.out.split()[-1]
    assert sql(engine, f"SELECT version_num FROM {VERSION_TABLE}") == [(revision,)]
    second = cli("migrate", env=env, cwd=tmp_path)
    assert second.code == 0, second
    assert second.out.strip() == f"schema already at revision {revision}"
    assert "Traceback" not in first.both + second.both
    assert sql(engine, f"SELECT version_num FROM {VERSION_TABLE}") == [(revision,)]


def test_run_and_worker_need_the_token_and_worker_needs_a_broker(
    pg_url: str, tmp_path: Path
) -> None:
    run, worker, brokerless = parallel(
        lambda: cli("run", env=base_env(), cwd=tmp_path, timeout=30),
        lambda: cli(
            "worker",
            env=base_env(DATABASE_URL=pg_url, CELERY_BROKER_URL=REDIS_URL),
            cwd=tmp_path,
            timeout=30,
        ),
        lambda: cli(
            "worker", env=base_env(DATABASE_URL=pg_url, USEAPI_TOKEN=SECRET_TOKEN), cwd=tmp_path
        ),
    )
    assert_one_line_error(run, "USEAPI_TOKEN")
    assert not (tmp_path / ".pixverse-tracker").exists(), "run stopped before opening a database"
    assert_one_line_error(worker, "USEAPI_TOKEN")
    assert_one_line_error(brokerless, "CELERY_BROKER_URL", "use `pixverse-tracker run`")


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_bare_celery_worker_or_beat_without_database_url_stops_at_start_naming_it(
    command: str, tmp_path: Path
) -> None:
    # Celery swallows a signal handler's exception: this once ran on with a stray SQLite file.
    celery = str(Path(CLI).with_name("celery"))
    env = base_env(USEAPI_TOKEN=SECRET_TOKEN, TRACKER_METRICS_PORT="0")
    args = [
        celery,
        "-A",
        "pixverse_tracker.jobs.app",
        command,
        *(["--pool=threads"] * (command == "worker")),
    ]
    try:
        done = subprocess.run(
            args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`celery {command}` without DATABASE_URL did not stop")
    assert done.returncode != 0, done
    assert "DATABASE_URL is not set" in done.stderr, done
    assert SECRET_TOKEN not in done.stdout + done.stderr
    assert not (tmp_path / ".pixverse-tracker").exists()


def test_the_celery_worker_command_without_a_token_refuses_to_start_with_one_line(
    pg_url: str, tmp_path: Path
) -> None:
    # README: `celery -A pixverse_tracker.jobs.app worker` works like `pixverse-tracker worker`
    celery = str(Path(CLI).with_name("celery"))
    env = base_env(
        DATABASE_URL=pg_url,
        CELERY_BROKER_URL=REDIS_URL,
        TRACKER_QUEUE_PREFIX=f"notoken-{uuid.uuid4().hex[:8]}",
        TRACKER_METRICS_PORT="0",
    )
    argv = [
        celery,
        "-A",
        "pixverse_tracker.jobs.app",
        "worker",
        "--pool=threads",
        "--without-mingle",
    ]
    try:
        done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the celery worker started without USEAPI_TOKEN and kept running")
    err = done.stderr.decode("utf-8", errors="replace")
    assert done.returncode != 0, err
    assert "Traceback" not in err + done.stdout.decode("utf-8", errors="replace"), err
    # (Celery may warn first that it runs as root; the refusal is the one line of ours)
    ours = [line for line in err.splitlines() if line.startswith("pixverse-tracker: error: ")]
    assert ours == [
        "pixverse-tracker: error: USEAPI_TOKEN is not set: the tracker cannot poll useapi.net "
        "without it"
    ], err
    assert err.strip().splitlines()[-1] == ours[0], err


def test_health_fails_with_one_line_when_dispatch_stopped_while_ids_are_due(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    env = {**pg_env, "CELERY_BROKER_URL": REDIS_URL}
    assert cli("enqueue", vid(1), env=env, cwd=tmp_path).code == 0
    sql(pg_engine, "UPDATE videos SET next_poll_at = now()")  # its first look is due
    # beat (or every worker) died 52 s ago, with the default 5 s dispatch interval
    sql(pg_engine, "UPDATE tracker_control SET last_dispatch_at = now() - interval '52 seconds'")
    result = cli("health", env=env, cwd=tmp_path)
    assert result.code == 1, result
    (line,) = [line for line in result.out.splitlines() if line.startswith("FAIL")]
    assert re.fullmatch(
        r"FAIL dispatch: last ran 5\ds ago \(more than 3 x TRACKER_DISPATCH_INTERVAL = 15s\) "
        r"while 1 ids are due: is beat running, and a worker\?",
        line,
    ), result
    assert "ok   database" in result.out and "ok   broker" in result.out

    sql(pg_engine, "UPDATE tracker_control SET last_dispatch_at = now()")
    assert cli("health", env=env, cwd=tmp_path).code == 0


# --- status, list, show --------------------------------------------------------------------------


def test_status_text_and_json(pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path) -> None:
    fresh, old, done, gone = vid(1), vid(2), vid(3), vid(4)
    assert cli("enqueue", fresh, old, done, gone, env=pg_env, cwd=tmp_path).code == 0
    sql(
        pg_engine,
        "UPDATE videos SET enqueued_at = now() - interval '5 minutes', "
        "next_poll_at = now() - interval '1 minute' WHERE video_id = :v",
        v=old,
    )
    sql(
        pg_engine,
        "UPDATE videos SET state = 'done', done_at = now(), next_poll_at = NULL WHERE video_id = :v",
        v=done,
    )
    sql(
        pg_engine,
        "UPDATE videos SET state = 'abandoned', next_poll_at = NULL, "
        "abandon_reason = 'deleted: gone' WHERE video_id = :v",
        v=gone,
    )
    result, as_json = parallel(
        lambda: cli("status", env=pg_env, cwd=tmp_path),
        lambda: cli("status", "--json", env=pg_env, cwd=tmp_path),
    )
    assert result.code == 0, result
    assert result.err == "", result
    lines = result.out.splitlines()
    assert lines[0] == "pending 2  done 1  abandoned 1  (due now 1)"
    assert lines[1] == f"oldest pending: {old} (enqueued 5m ago)"
    assert "last hour: 0 polls, 0 errors, 0 rate-limited, 0 unauthorized" in lines
    # nothing has proved the token yet: no request was answered (issue 11)
    assert "upstream token: not proven (no upstream answer in the last hour)" in lines
    assert any(line.startswith("rate: 5/s of 5/s") for line in lines), result

    assert as_json.code == 0, as_json
    data = json.loads(as_json.out)
    assert data["counts"] == {"pending": 2, "done": 1, "abandoned": 1}
    assert data["due_now"] == 1
    assert data["oldest_pending_id"] == old
    assert data["auth_failing"] is False
    assert data["polls_last_hour"] == 0
    assert data["rate_factor"] == 1.0

    # answers that prove the token, and a rate cut by 429s to 0.760022 of 5/s (held there: the
    # climb back starts at rate_factor_at, an hour from now)
    sql(
        pg_engine,
        "INSERT INTO poll_minutes (minute, polls, errors, rate_limited, unauthorized) "
        "VALUES (date_trunc('minute', now()), 12, 3, 2, 0)",
    )
    sql(
        pg_engine,
        "UPDATE tracker_control SET rate_factor = 0.760022, "
        "rate_factor_at = now() + interval '1 hour'",
    )
    answered = cli("status", env=pg_env, cwd=tmp_path)
    assert answered.code == 0, answered
    # 12 polls less 3 errors and 2 rate-limited: 7 answers proved the token
    assert (
        "upstream token: accepted (7 answers in the last hour; no 401 since the last success)"
        in answered.out
    ), answered
    assert "rate: 3.8/s of 5/s;" in answered.out, answered

    sql(
        pg_engine,
        "UPDATE tracker_control SET auth_failing = true, auth_failed_at = now(), "
        "auth_error = '401: Unauthorized token', auth_paused_until = now() + interval '1 minute'",
    )
    failing = cli("status", env=pg_env, cwd=tmp_path)
    assert failing.code == 0, failing
    assert "UPSTREAM REJECTS THE TOKEN since" in failing.out, failing
    assert "401: Unauthorized token" in failing.out
    assert "upstream token: accepted" not in failing.out


@pytest.fixture
def listed(pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path) -> dict[str, str]:
    """Four rows: pending, done COMPLETED (2 h ago), done FAILED (10 min ago), abandoned.

    As the tracker writes them: ``done_at`` is set for done rows only (README, videos table).
    """
    ids = {"pending": vid(1), "completed": vid(2), "failed": vid(3), "rejected": vid(4)}
    assert cli("enqueue", *ids.values(), env=pg_env, cwd=tmp_path).code == 0
    sql(
        pg_engine,
        "UPDATE videos SET state = 'done', done_at = now() - interval '2 hours', "
        "status_code = 1, status_name = 'COMPLETED', status_final = true, poll_count = 4, "
        "url = 'https://media.example/2.mp4', next_poll_at = NULL WHERE video_id = :v",
        v=ids["completed"],
    )
    sql(
        pg_engine,
        "UPDATE videos SET state = 'done', done_at = now() - interval '10 minutes', "
        "status_code = 8, status_name = 'FAILED', status_final = true, poll_count = 3, "
        "next_poll_at = NULL WHERE video_id = :v",
        v=ids["failed"],
    )
    sql(
        pg_engine,
        "UPDATE videos SET state = 'abandoned', updated_at = now() - interval '5 minutes', "
        "abandon_reason = 'rejected: Invalid video_id', last_http_status = 400, poll_count = 1, "
        "next_poll_at = NULL WHERE video_id = :v",
        v=ids["rejected"],
    )
    return ids


def test_list_table_filters_json_and_csv(
    listed: dict[str, str], pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    now, exact = sql(
        pg_engine, "SELECT now(), done_at FROM videos WHERE video_id = :v", v=listed["completed"]
    )[0]
    assert isinstance(now, datetime) and isinstance(exact, datetime)
    an_hour_ago = (now - timedelta(hours=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    exact_text = exact.astimezone(UTC).isoformat()  # the form `list --json` prints done_at in
    calls = {
        "table": ("list",),
        "done": ("list", "--state", "done", "--json"),
        "COMPLETED": ("list", "--status", "COMPLETED", "--json"),
        "1": ("list", "--status", "1", "--json"),
        "since": ("list", "--since", an_hour_ago, "--json"),
        "exact": ("list", "--since", exact_text, "--json"),
        "json": ("list", "--json"),
        "csv": ("list", "--csv"),
    }
    results = dict(
        zip(
            calls,
            parallel(*((lambda a=a: cli(*a, env=pg_env, cwd=tmp_path)) for a in calls.values())),
            strict=True,
        )
    )
    for result in results.values():
        assert result.code == 0, result
        assert result.err == "", result

    rows = table_rows(results["table"].out)
    assert rows[0] == VIDEO_HEADERS
    assert [r[0] for r in rows[1:]] == list(listed.values())
    by_id = {r[0]: r for r in rows[1:]}
    assert by_id[listed["completed"]][1:3] == ["done", "COMPLETED"]
    assert by_id[listed["completed"]][-1] == "https://media.example/2.mp4"
    assert by_id[listed["rejected"]][1] == "abandoned"
    assert by_id[listed["rejected"]][-1] == "rejected: Invalid video_id"
    assert by_id[listed["pending"]][1:3] == ["pending", "-"]

    assert json_ids(results["done"]) == [listed["completed"], listed["failed"]]
    assert json_ids(results["COMPLETED"]) == [listed["completed"]]
    assert json_ids(results["1"]) == [listed["completed"]]
    # done (done_at) at or after T: not the one done 2 h ago, nor pending or abandoned rows
    assert json_ids(results["since"]) == [listed["failed"]]
    # "at or after": a row's exact done_at includes that row; oldest finish first
    assert json_ids(results["exact"]) == [listed["completed"], listed["failed"]]

    data = json.loads(results["json"].out)
    assert isinstance(data, list) and len(data) == 4
    assert all(isinstance(row, dict) and list(row) == PUBLIC_COLUMNS for row in data)
    completed = next(row for row in data if row["video_id"] == listed["completed"])
    assert completed["state"] == "done"
    assert completed["status_code"] == 1
    assert completed["status_final"] is True
    assert completed["url"] == "https://media.example/2.mp4"
    assert completed["poll_count"] == 4
    assert completed["done_at"] == exact_text

    reader = csv.DictReader(io.StringIO(results["csv"].out))
    assert reader.fieldnames == PUBLIC_COLUMNS
    csv_rows = list(reader)
    assert [r["video_id"] for r in csv_rows] == list(listed.values())
    rejected = next(r for r in csv_rows if r["video_id"] == listed["rejected"])
    assert rejected["state"] == "abandoned"
    assert rejected["abandon_reason"] == "rejected: Invalid video_id"


def test_list_status_that_is_no_status_is_one_line_naming_the_known_ones(
    listed: dict[str, str], pg_env: dict[str, str], tmp_path: Path
) -> None:
    bogus, moderated, by_number = parallel(
        lambda: cli("list", "--status", "BOGUS", env=pg_env, cwd=tmp_path),
        lambda: cli("list", "--status", "moderated", env=pg_env, cwd=tmp_path),
        lambda: cli("list", "--status", "42", "--json", env=pg_env, cwd=tmp_path),
    )
    assert_one_line_error(bogus, "--status 'BOGUS' is not a known status", "COMPLETED, ")
    assert bogus.out == ""
    # a known status no row has yet, and any number, are a plain empty answer
    assert moderated.code == 0 and table_rows(moderated.out) == [VIDEO_HEADERS], moderated
    assert json_ids(by_number) == []


def test_list_limit_says_on_stderr_when_rows_were_left_out(
    listed: dict[str, str], pg_env: dict[str, str], tmp_path: Path
) -> None:
    cut, cut_json, whole, everything = parallel(
        lambda: cli("list", "--limit", "2", env=pg_env, cwd=tmp_path),
        lambda: cli("list", "--limit", "3", "--state", "done", "--json", env=pg_env, cwd=tmp_path),
        lambda: cli("list", "--limit", "4", env=pg_env, cwd=tmp_path),
        lambda: cli("list", "--limit", "0", env=pg_env, cwd=tmp_path),
    )
    assert cut.code == 0, cut
    assert len(table_rows(cut.out)) == 1 + 2
    assert cut.err == "showing 2 of 4 (--limit 0 for all)\n", cut
    # the filters count too: two done rows fit in a limit of 3; the JSON stays whole
    assert cut_json.err == "" and len(json_ids(cut_json)) == 2, cut_json
    for result in (whole, everything):
        assert result.code == 0 and result.err == "", result
        assert len(table_rows(result.out)) == 1 + 4


def test_version_prints_the_installed_version() -> None:
    import tomllib

    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
        expected = tomllib.load(f)["project"]["version"]
    result = cli("--version", env=base_env(), cwd=Path.cwd())
    assert result.code == 0, result
    assert result.out == f"pixverse-tracker {expected}\n", result


def test_health_says_what_is_wrong_in_words(
    empty_pg: tuple[str, Engine], pg_url: str, tmp_path: Path
) -> None:
    url, engine = empty_pg
    unmigrated, rabbit = parallel(
        lambda: cli("health", env=base_env(DATABASE_URL=url, CELERY_BROKER_URL=REDIS_URL),
                    cwd=tmp_path),
        lambda: cli("health", "--timeout", "1",
                    env=base_env(DATABASE_URL=pg_url, CELERY_BROKER_URL="rabbit://guest:s3cret-pw@mq//"),
                    cwd=tmp_path),
    )  # fmt: skip
    assert unmigrated.code == 1, unmigrated
    assert "FAIL database: not migrated: run `pixverse-tracker migrate`" in unmigrated.out
    assert "unreachable" not in unmigrated.both, unmigrated
    assert "ok   broker: reachable" in unmigrated.out, unmigrated
    assert sql(engine, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]

    assert rabbit.code == 1, rabbit
    assert "ok   database: reachable" in rabbit.out, rabbit
    assert "FAIL broker: CELERY_BROKER_URL names no broker kombu knows (rabbit://)" in rabbit.out
    assert "KeyError" not in rabbit.both and "s3cret-pw" not in rabbit.both, rabbit


def test_show_text_and_json(pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path) -> None:
    video = vid(9, "sim+completed_5@example.com")
    assert cli("enqueue", video, env=pg_env, cwd=tmp_path).code == 0
    record = {
        "video_id": video,
        "video_status": 1,
        "video_status_name": "COMPLETED",
        "video_status_final": True,
        "url": "https://media.example/9.mp4",
        "prompt": "a cat on a skateboard",
        "some_future_field": {"kept": [1, 2, 3]},
    }
    sql(
        pg_engine,
        "UPDATE videos SET state = 'done', done_at = now(), status_code = 1, "
        "status_name = 'COMPLETED', status_final = true, url = 'https://media.example/9.mp4', "
        "prompt = 'a cat on a skateboard', poll_count = 2, last_http_status = 200, "
        "next_poll_at = NULL, record = CAST(:record AS jsonb) WHERE video_id = :v",
        record=json.dumps(record),
        v=video,
    )
    sql(
        pg_engine,
        "INSERT INTO video_events (video_id, at, kind, http_status, status_code, status_name) "
        "VALUES (:v, now(), 'status', 200, 9, 'GENERATING'), "
        "(:v, now(), 'done', 200, 1, 'COMPLETED')",
        v=video,
    )
    shown, as_json = parallel(
        lambda: cli("show", video, env=pg_env, cwd=tmp_path),
        lambda: cli("show", video, "--json", env=pg_env, cwd=tmp_path),
    )
    assert shown.code == 0, shown
    assert shown.err == ""
    head, _, tail = shown.out.partition("\nhistory:\n")
    fields = dict(line.strip().split("  ", 1) for line in head.splitlines() if line.strip())
    fields = {k: v.strip() for k, v in fields.items()}
    assert list(fields) == PUBLIC_COLUMNS
    assert fields["video_id"] == video
    assert fields["state"] == "done"
    assert fields["status_name"] == "COMPLETED"
    assert fields["url"] == "https://media.example/9.mp4"
    assert fields["prompt"] == "a cat on a skateboard"
    assert fields["abandon_reason"] == "-"
    history = tail.splitlines()
    assert len(history) == 3, shown
    assert history[0].endswith("  enqueued")
    assert history[1].endswith("  status status=GENERATING http=200")
    assert history[2].endswith("  done status=COMPLETED http=200")

    assert as_json.code == 0, as_json
    data = json.loads(as_json.out)
    assert data["video_id"] == video
    assert data["state"] == "done"
    assert data["record"] == record
    assert set(PUBLIC_COLUMNS) <= set(data)
    assert "claim_token" not in data
    assert [e["kind"] for e in data["events"]] == ["enqueued", "status", "done"]
    assert data["events"][2]["status_name"] == "COMPLETED"
    assert data["events"][2]["http_status"] == 200


def test_token_never_appears_in_cli_output(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    # cli() checks this for every Postgres-backed call of this file (status, status --json,
    # list in all formats, show, show --json, errors); here it is explicit, on the outputs that
    # show the most: the auth-failure state, the full record, every column.
    assert pg_env["USEAPI_TOKEN"] == SECRET_TOKEN
    video = vid(5)
    assert cli("enqueue", video, env=pg_env, cwd=tmp_path).code == 0
    sql(
        pg_engine,
        "UPDATE tracker_control SET auth_failing = true, auth_failed_at = now(), "
        "auth_error = '401: Unauthorized', auth_paused_until = now() + interval '1 minute'",
    )
    results = parallel(
        lambda: cli("status", env=pg_env, cwd=tmp_path),
        lambda: cli("list", "--json", env=pg_env, cwd=tmp_path),
        lambda: cli("show", video, "--json", env=pg_env, cwd=tmp_path),
    )
    assert [r.code for r in results] == [0, 0, 0], "\n".join(map(str, results))
    assert "UPSTREAM REJECTS THE TOKEN" in results[0].out
    assert video in results[1].out and video in results[2].out
    for result in results:
        assert SECRET_TOKEN not in result.both, result


# --- the embedded default ------------------------------------------------------------------------


def test_without_database_url_enqueue_uses_only_an_existing_embedded_file_and_names_it(
    tmp_path: Path,
) -> None:
    env = base_env()
    a, b = vid(1), vid(2)
    refused = cli("enqueue", a, env=env, cwd=tmp_path)
    assert_one_line_error(refused, "DATABASE_URL is not set", ".pixverse-tracker/tracker.db")
    assert list(tmp_path.iterdir()) == [], "no stray database file"

    # the file `run` makes here (an explicit sqlite:// URL is always accepted)
    database = tmp_path / ".pixverse-tracker" / "tracker.db"
    explicit = base_env(DATABASE_URL="sqlite:///.pixverse-tracker/tracker.db")
    assert cli("migrate", env=explicit, cwd=tmp_path).code == 0
    note = "pixverse-tracker: using the embedded database .pixverse-tracker/tracker.db"
    enq = cli("enqueue", a, b, a, env=env, cwd=tmp_path)
    assert enq.code == 0, enq
    assert enq.out.strip() == "enqueued 2 new, re-armed 0, 0 already tracked"
    assert enq.err.startswith(note), enq
    assert database.is_file()
    # private: no other user may read the records or plant a file beside them (issue 11)
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(database.stat().st_mode) == 0o600

    listed = cli("list", env=env, cwd=tmp_path)
    assert listed.code == 0, listed
    assert listed.err.startswith(note), listed
    rows = table_rows(listed.out)
    assert rows[0] == VIDEO_HEADERS
    assert [(r[0], r[1]) for r in rows[1:]] == [(a, "pending"), (b, "pending")]

    with sqlite3.connect(database) as conn:
        stored = conn.execute("SELECT video_id, state FROM videos ORDER BY video_id").fetchall()
    assert stored == [(a, "pending"), (b, "pending")]


# --- demo ----------------------------------------------------------------------------------------


def test_demo_finishes_every_scenario(demo_in_background: Background | None) -> None:
    assert demo_in_background is not None
    process, cwd = demo_in_background.process, demo_in_background.cwd
    try:
        code = process.wait(timeout=max(1.0, 90 - (time.monotonic() - demo_in_background.started)))
    except subprocess.TimeoutExpired:
        pytest.fail("demo --speed 4 did not finish within 90 s")
    process.wait()  # returns at once; the watcher thread notes when it ended
    for _ in range(100):
        if demo_in_background.ended is not None:
            break
        time.sleep(0.01)
    assert demo_in_background.ended is not None
    elapsed = demo_in_background.ended - demo_in_background.started
    out = (cwd / "stdout.txt").read_text(errors="replace")
    err = (cwd / "stderr.txt").read_text(errors="replace")
    result = Result(code, out, err, elapsed)
    assert code == 0, result
    assert elapsed < 60, f"demo --speed 4 took {elapsed:.0f}s"
    assert "Traceback" not in result.both, result
    assert "22/22 finished" in out, result
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("VIDEO_ID"))
    # stdout is a file, not a terminal: one plain line per change of the counts, no bar
    progress = [line.rsplit(")", 1)[0] for line in lines[:header] if " finished  (" in line]
    assert progress[-1] == "22/22 finished  (done 19, abandoned 3, pending 0", result
    assert len(progress) == len(set(progress)) <= 23, result
    assert not any("[#" in line or "[-" in line for line in lines), result
    assert "No hostname was supplied" not in result.both, result
    assert table_rows(lines[header])[0] == [*VIDEO_HEADERS, "SCENARIO"]
    rows = []
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    assert len(rows) == 22, result
    assert all(row[1] in ("done", "abandoned") for row in rows), result
    # one account's five videos, read through its list: all COMPLETED
    team = [row for row in rows if "sim+" not in row[0]]
    assert len(team) == 5 and all(row[1:3] == ["done", "COMPLETED"] for row in team), result
    by_tag = {row[0].split("sim+")[1].split("@")[0]: row for row in rows if "sim+" in row[0]}
    assert by_tag["rejected"][1] == "abandoned"
    assert "rejected:" in by_tag["rejected"]
    assert by_tag["never"][1] == "abandoned"
    assert "expired:" in by_tag["never"]
    completed = [row for tag, row in by_tag.items() if tag.startswith("completed_")]
    assert len(completed) == 3
    assert all(row[1:3] == ["done", "COMPLETED"] for row in completed)
    assert "requests sent to the simulator:" in out
    assert "for studio@example.com" in out
    assert (cwd / ".pixverse-tracker" / "demo" / "demo.db").is_file()
    # the embedded beat keeps no schedule file: nothing is left in the user's folder
    assert not list(cwd.glob("celerybeat-schedule*"))


# --- bugs found while writing these tests --------------------------------------------------------


def test_migrate_on_a_database_from_a_newer_version_is_one_line(
    empty_pg: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = empty_pg
    env = base_env(DATABASE_URL=url)
    migrator = make_engine(url, pool=False)
    upgrade(migrator)
    migrator.dispose()
    sql(engine, f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'")
    result = cli("migrate", env=env, cwd=tmp_path)
    assert_one_line_error(result, "9999_from_the_future")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_data_dir_that_belongs_to_another_user_is_refused_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "theirs").mkdir()
    os.chown(tmp_path / "theirs", 65534, 65534)
    # an explicit sqlite:// URL: only `run` creates the embedded default (TRACKER_DATA_DIR)
    env = base_env(DATABASE_URL="sqlite:///theirs/tracker.db")
    result = cli("enqueue", vid(1), env=env, cwd=tmp_path)
    assert_one_line_error(result, "the database folder theirs belongs to another user")
    assert list((tmp_path / "theirs").iterdir()) == []


def test_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("oops\n")
    # `run` is the command that makes the embedded database under the data dir
    env = base_env(TRACKER_DATA_DIR="not-a-dir", USEAPI_TOKEN="tok")
    result = cli("run", env=env, cwd=tmp_path)
    assert_one_line_error(result, "not-a-dir")


def test_simulate_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("simulate", "--port", str(port), env=base_env(), cwd=tmp_path, timeout=15)
    assert_one_line_error(result, str(port))


def test_a_webhook_address_that_is_never_allowed_is_one_line_and_stores_nothing(
    pg_env: dict[str, str], pg_engine: Engine, tmp_path: Path
) -> None:
    metadata = "http://[::ffff:169.254.169.254]/latest/meta-data/?token=app-secret-1"
    # health checks every setting, as worker and run do (status reads only the database ones)
    enqueue, health = parallel(
        lambda: cli("enqueue", "--webhook-url", metadata, vid(9101), env=pg_env, cwd=tmp_path),
        lambda: cli("health", env={**pg_env, "TRACKER_WEBHOOK_URL": metadata}, cwd=tmp_path),
    )
    line = assert_one_line_error(
        enqueue, "webhook URL host ::ffff:169.254.169.254 is a cloud metadata address"
    )
    assert "never allowed" in line and "app-secret-1" not in enqueue.both
    assert sql(pg_engine, "SELECT count(*) FROM videos WHERE video_id = :v", v=vid(9101)) == [(0,)]
    assert_one_line_error(health, "TRACKER_WEBHOOK_URL: ", "never allowed")

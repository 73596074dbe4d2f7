"""The wheel, installed as an application installs it: one import name, and every process runs
from it outside the repository, beside an application's own worker.py, models.py and migrations/.

The wheel goes into a fresh virtual environment without its dependencies; those come from this
environment's site-packages through a .pth line (Python does not read the .pth files of a folder
added that way, so the repository's editable install stays out, and the package imported is the
wheel's: checked by its __file__).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pixverse_tracker.testing import Simulator, base_env, make_id
from tests.conftest import REDIS_URL, empty_database
from tests.e2e.conftest import FAST, TOKEN, wait_until

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from: the project's metadata and the three folders it maps.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "worker", "models", "migrations")
# An application's own modules, named like the repository's folders.
APPLICATION = {
    "worker.py": '"""The application\'s own worker."""\n',
    "models.py": '"""The application\'s own models."""\n\nfrom dataclasses import dataclass\n',
    "migrations/__init__.py": '"""The application\'s own migrations."""\n',
}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    app: Path  # the application's folder, where every process runs

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def cli(self) -> str:
        return str(self.venv / "bin" / "pixverse-tracker")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    home = tmp_path_factory.mktemp("wheel")
    source = home / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = home / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(dist), str(source)])  # fmt: skip
    [wheel] = dist.glob("*.whl")

    venv = home / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         str(wheel)])  # fmt: skip
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(site.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    app = home / "application"
    for name, content in APPLICATION.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(content)
    return Installed(wheel, venv, app)


def run(argv: list[str], **kwargs: object) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


def environment(**extra: str) -> dict[str, str]:
    env = base_env(TRACKER_METRICS_PORT="0", TRACKER_BEAT_METRICS_PORT="0", **FAST, **extra)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def test_the_wheel_installs_one_package_with_its_types_and_nothing_else(
    installed: Installed,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"pixverse_tracker", "pixverse_tracker-0.1.0.dist-info"}, top
    assert "pixverse_tracker/py.typed" in names
    assert "pixverse_tracker/migrations/script.py.mako" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert (
            "pixverse-tracker = pixverse_tracker.cli.main:main" in wheel.read(entry_points).decode()
        )


def test_an_application_imports_the_tracker_and_keeps_its_own_worker_and_models(
    installed: Installed,
) -> None:
    code = (
        "import json, pixverse_tracker, pixverse_tracker.models, worker, models, migrations\n"
        "print(json.dumps({\n"
        "    'tracker': pixverse_tracker.__file__,\n"
        "    'tracker_models': pixverse_tracker.models.__file__,\n"
        "    'worker': worker.__file__, 'models': models.__file__,\n"
        "    'migrations': migrations.__file__,\n"
        "    'api': [callable(getattr(pixverse_tracker, name)) for name in\n"
        "            ('enqueue', 'get', 'completed_since', 'wait_for')],\n"
        "}))\n"
    )
    found = json.loads(run([installed.python, "-c", code], cwd=installed.app, env=environment()))
    assert Path(found["tracker"]).is_relative_to(installed.venv), found
    assert Path(found["tracker_models"]).is_relative_to(installed.venv), found
    assert Path(found["worker"]) == installed.app / "worker.py"
    assert Path(found["models"]) == installed.app / "models.py"
    assert Path(found["migrations"]) == installed.app / "migrations" / "__init__.py"
    assert found["api"] == [True, True, True, True]


@pytest.fixture
def database() -> Iterator[str]:
    with empty_database("pt_wheel") as url:
        yield url


def test_migrate_enqueue_worker_and_beat_run_from_the_wheel_outside_the_repository(
    installed: Installed, database: str, queue_prefix: str
) -> None:
    with Simulator(token=TOKEN, default_delay=3) as sim:
        env = environment(
            USEAPI_TOKEN=TOKEN,
            USEAPI_BASE_URL=sim.base_url,
            DATABASE_URL=database,
            CELERY_BROKER_URL=REDIS_URL,
            TRACKER_QUEUE_PREFIX=queue_prefix,
        )
        migrated = run([installed.cli, "migrate"], cwd=installed.app, env=env)
        assert "schema migrated from empty to" in migrated
        # alembic with the repository's alembic.ini finds the installed package's migrations
        alembic = [installed.python, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "check"]
        assert "No new upgrade operations detected" in run(alembic, cwd=installed.app, env=env)

        # Once with the tracker's commands, once with celery -A: both from the wheel.
        pixverse = ([installed.cli, "worker"], [installed.cli, "beat"])
        celery = [installed.python, "-m", "celery", "-A", "pixverse_tracker.jobs.app"]
        bare = ([*celery, "worker", "--pool=threads", "--without-mingle"], [*celery, "beat"])
        for n, commands in enumerate((pixverse, bare), start=1):
            video_id = make_id("completed_1", n)
            enqueued = run([installed.cli, "enqueue", video_id], cwd=installed.app, env=env)
            assert "enqueued 1 new" in enqueued
            logs = installed.app / f"round-{n}.log"
            with open(logs, "wb") as log:
                started = [
                    subprocess.Popen(
                        argv,
                        cwd=installed.app,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    for argv in commands
                ]
                try:
                    done = wait_until(lambda v=video_id: _state(database, v) == "done", 60)
                finally:
                    for process in started:
                        process.send_signal(signal.SIGTERM)
                    for process in started:
                        try:
                            process.wait(15)
                        except subprocess.TimeoutExpired:
                            process.kill()
                            process.wait()
            assert done, logs.read_text(errors="replace")
            assert sim.requests_for(video_id), "the worker asked the simulator"
            assert all(process.returncode == 0 for process in started), logs.read_text()


def _state(url: str, video_id: str) -> str | None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT state FROM videos WHERE video_id = :v"), {"v": video_id}
            ).first()
        return None if row is None else str(row[0])
    finally:
        engine.dispose()

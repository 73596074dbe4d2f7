"""docker-compose.yml: valid for Debian's docker-compose, and its commands are the tracker's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import REDIS_URL, empty_database
from tests.e2e.conftest import Processes, base_env, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _compose_config() -> dict[str, object]:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; .ci/run installs it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        ["docker-compose", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "USEAPI_TOKEN": "compose-check"},
    )
    assert result.returncode == 0, result.stderr
    loaded = yaml.safe_load(result.stdout)
    assert isinstance(loaded, dict)
    return loaded


def test_compose_file_validates_and_wires_the_tracker_services() -> None:
    services = _compose_config()["services"]
    assert isinstance(services, dict)
    assert {"postgres", "redis", "migrate", "worker", "beat"} <= set(services)
    assert services["migrate"]["command"] == ["pixverse-tracker", "migrate"]
    assert services["worker"]["command"] == ["pixverse-tracker", "worker"]
    assert services["beat"]["command"] == ["pixverse-tracker", "beat"]
    for name in ("worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")
    # the receiver on the server made for untrusted clients, with its limits (issue 11)
    callbacks = services["callbacks"]
    assert callbacks["command"][:4] == ["pixverse-tracker", "callbacks", "--server", "waitress"]
    assert {
        "TRACKER_CALLBACK_MAX_CONNECTIONS": "1000",
        "TRACKER_CALLBACK_HEADER_TIMEOUT": "10",
        "TRACKER_CALLBACK_BODY_TIMEOUT": "20",
    }.items() <= callbacks["environment"].items()
    assert callbacks["ulimits"]["nofile"]["soft"] >= 1000 + 64
    assert "healthcheck" in services["postgres"]
    assert any("pgdata" in str(v) for v in services["postgres"]["volumes"])


def _loopback_env(environment: dict[str, str], database_url: str) -> dict[str, str]:
    """The service's compose environment, with the compose hostnames mapped to this machine."""
    env = base_env(**{k: str(v) for k, v in environment.items()})
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=REDIS_URL,
        USEAPI_TOKEN="compose-token",
        TRACKER_CALLBACK_SECRET="compose-callback-secret",
        TRACKER_QUEUE_PREFIX=f"compose-{uuid.uuid4().hex[:8]}",
        TRACKER_METRICS_PORT=str(free_port()),
        TRACKER_BEAT_METRICS_PORT=str(free_port()),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def test_each_service_runs_on_loopback_the_way_compose_runs_it(tmp_path: Path) -> None:
    services = _compose_config()["services"]
    with empty_database("pt_compose") as database_url:
        plain_url = database_url.replace("postgresql+psycopg2://", "postgresql://")
        envs = {
            name: _loopback_env(services[name]["environment"], plain_url)
            for name in ("migrate", "worker", "beat", "callbacks")
        }
        migrate = subprocess.run(
            services["migrate"]["command"], env=envs["migrate"], capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert migrate.returncode == 0, migrate.stderr
        port = free_port()
        loopback = {"0.0.0.0": "127.0.0.1", "8081": str(port)}
        callbacks_cmd = [loopback.get(arg, arg) for arg in services["callbacks"]["command"]]
        procs = Processes(tmp_path, envs["worker"])
        try:
            procs.env = envs["worker"]
            procs.start_raw(services["worker"]["command"])
            procs.env = envs["beat"]
            procs.start_raw(services["beat"]["command"])
            procs.env = envs["callbacks"]
            procs.start_raw(callbacks_cmd)

            def up(url: str) -> bool:
                try:
                    return requests.get(url, timeout=2).status_code == 200
                except requests.RequestException:
                    return False

            worker_metrics = f"http://127.0.0.1:{envs['worker']['TRACKER_METRICS_PORT']}/metrics"
            beat_metrics = f"http://127.0.0.1:{envs['beat']['TRACKER_BEAT_METRICS_PORT']}/metrics"
            assert wait_until(lambda: up(f"http://127.0.0.1:{port}/healthz"), 60), procs.logs()
            assert wait_until(lambda: up(worker_metrics), 60), procs.logs()
            assert wait_until(lambda: up(beat_metrics), 60), procs.logs()
            assert "tracker_pending 0.0" in requests.get(beat_metrics, timeout=5).text
            assert all(p.poll() is None for p in procs.started), procs.logs()
            # the worker's compose healthcheck passes against the same services
            check = services["worker"]["healthcheck"]["test"][1:]
            health = subprocess.run(
                check, env=envs["worker"], capture_output=True, text=True, timeout=60, check=False
            )
            assert health.returncode == 0, health.stdout + health.stderr
        finally:
            procs.stop_all()
        assert all(p.returncode == 0 for p in procs.started), procs.logs()

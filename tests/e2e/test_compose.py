"""docker-compose.yml: valid for Debian's docker-compose, and its commands are the tracker's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from pixverse_tracker.testing import Processes, base_env
from tests.conftest import REDIS_URL, empty_database
from tests.e2e.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


# What a user exports before `docker-compose up` (both are required).
COMPOSE_ENV = {
    "USEAPI_TOKEN": "compose-check",
    "TRACKER_PUSH_SECRET": "compose-push-secret-0123456",
}


def _run_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; .ci/run installs it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return subprocess.run(
        ["docker-compose", "config"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )


def _compose_config() -> dict[str, object]:
    result = _run_compose_config({**os.environ, **COMPOSE_ENV})
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
    receiver = services["push-receiver"]
    assert receiver["command"][:4] == ["pixverse-tracker", "push-receiver", "--server", "waitress"]
    assert {
        "TRACKER_PUSH_MAX_CONNECTIONS": "1000",
        "TRACKER_PUSH_HEADER_TIMEOUT": "10",
        "TRACKER_PUSH_BODY_TIMEOUT": "20",
    }.items() <= receiver["environment"].items()
    assert receiver["ulimits"]["nofile"]["soft"] >= 1000 + 64
    assert "healthcheck" in services["postgres"]
    assert any("pgdata" in str(v) for v in services["postgres"]["volumes"])
    # the secret the user exported reaches the receiver (without one it answers 500)
    secret = services["push-receiver"]["environment"]["TRACKER_PUSH_SECRET"]
    assert secret == COMPOSE_ENV["TRACKER_PUSH_SECRET"]
    # /metrics published on loopback: beat's fixed, each worker replica's on a free host port
    assert [str(p) for p in services["beat"]["ports"]] == ["127.0.0.1:9809:9809/tcp"]
    assert [str(p) for p in services["worker"]["ports"]] == ["127.0.0.1::9808/tcp"]


@pytest.mark.parametrize("missing", list(COMPOSE_ENV))
def test_compose_refuses_to_start_without_the_token_or_the_receivers_secret(missing: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    env.update({k: v for k, v in COMPOSE_ENV.items() if k != missing})
    result = _run_compose_config(env)
    assert result.returncode != 0, result.stdout
    # the last words of docker-compose's message are ours, naming the variable
    assert result.stderr.strip().splitlines()[-1].split(": ")[-1].startswith(f"set {missing} to ")


def _published(service: dict[str, object]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}  # type: ignore[attr-defined]


def test_compose_publishes_the_metrics_and_offers_monitoring_and_flower_under_profiles() -> None:
    services = _compose_config()["services"]
    assert isinstance(services, dict)
    assert 9808 in _published(services["worker"])
    assert 9809 in _published(services["beat"])
    # the tools start only when asked for
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    assert services["flower"]["profiles"] == ["flower"]
    # Prometheus and Grafana are provisioned from deploy/, with files that exist
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = Path(volume["source"] if isinstance(volume, dict) else volume.split(":")[0])
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not there"
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = json.dumps(scrape["scrape_configs"])
    assert '"worker"' in targets and "9808" in targets and "beat:9809" in targets
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    # Flower is Celery's, over the tracker's app; the workers' remote control follows one setting
    assert services["flower"]["command"][:3] == ["celery", "-A", "pixverse_tracker.jobs.app"]
    assert services["worker"]["environment"]["TRACKER_CELERY_CONTROL"] == "false"


def _loopback_env(environment: dict[str, str], database_url: str) -> dict[str, str]:
    """The service's compose environment, with the compose hostnames mapped to this machine."""
    env = base_env(**{k: str(v) for k, v in environment.items()})
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=REDIS_URL,
        USEAPI_TOKEN="compose-token",
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
            for name in ("migrate", "worker", "beat", "push-receiver")
        }
        migrate = subprocess.run(
            services["migrate"]["command"], env=envs["migrate"], capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert migrate.returncode == 0, migrate.stderr
        port = free_port()
        loopback = {"0.0.0.0": "127.0.0.1", "8081": str(port)}
        receiver_cmd = [loopback.get(arg, arg) for arg in services["push-receiver"]["command"]]
        procs = Processes(envs["worker"], tmp_path)
        try:
            procs.env = envs["worker"]
            procs.start_raw(services["worker"]["command"])
            procs.env = envs["beat"]
            procs.start_raw(services["beat"]["command"])
            procs.env = envs["push-receiver"]
            procs.start_raw(receiver_cmd)

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
            assert (
                'tracker_videos{state="pending"} 0.0' in requests.get(beat_metrics, timeout=5).text
            )
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

"""docker-compose.yml: valid for Debian's docker-compose, and its commands are the tracker's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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
    assert "healthcheck" in services["postgres"]
    assert any("pgdata" in str(v) for v in services["postgres"]["volumes"])

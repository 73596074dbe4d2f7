"""What ships: the licence pyproject names, a dependency range, and a Dockerfile that caches well."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert isinstance(project, dict)
    return project


def test_the_licence_file_is_the_mit_licence_pyproject_names() -> None:
    assert _project()["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_celery_may_be_any_5_x_from_5_7_not_one_minor_version() -> None:
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list)
    [celery] = [Requirement(d) for d in dependencies if Requirement(d).name == "celery"]
    assert all(celery.specifier.contains(v) for v in ("5.7.0", "5.8.0", "5.12.3"))
    assert not any(celery.specifier.contains(v) for v in ("5.6.3", "6.0.0"))


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_the_image_installs_dependencies_before_it_copies_the_source() -> None:
    lines = _dockerfile()
    install = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    copies = [line for line in lines[:install] if line.startswith("COPY")]
    assert copies == ["COPY pyproject.toml ./"], "only pyproject.toml may come before the install"
    assert any(line.startswith("COPY worker") for line in lines[install:])


def test_the_dependency_list_the_image_installs_is_pyprojects() -> None:
    # The very command of the Dockerfile's RUN, run here, on this checkout's pyproject.toml.
    [run] = [line for line in _dockerfile() if "pip install -r" in line]
    extract = run.removeprefix("RUN ").split(" > /tmp/requirements.txt")[0]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    listed = subprocess.run(
        ["sh", "-c", extract],
        cwd=ROOT,
        env={**os.environ, "PATH": path},  # `python` is this interpreter, as in the image
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    project = _project()
    optional = project["optional-dependencies"]
    assert isinstance(optional, dict)
    assert listed == [*project["dependencies"], *optional["server"], *optional["flower"]]  # type: ignore[misc]


def test_the_image_checks_its_own_health_with_the_health_command() -> None:
    [check] = [line for line in _dockerfile() if line.startswith("HEALTHCHECK")]
    assert check.endswith('CMD ["pixverse-tracker", "health", "--timeout", "5"]')

"""The code passes the project's own bar: ruff (lint and format) and mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ruff_finds_nothing_to_complain_about() -> None:
    result = _run("ruff", "check", "worker", "models", "migrations", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_ruff_formatted() -> None:
    result = _run("ruff", "format", "--check", "worker", "models", "migrations", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_on_the_package_and_the_benchmarks() -> None:
    # pyproject's [tool.mypy] packages: pixverse_tracker (worker/, models/, migrations/), bench
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr

"""Shared helpers (run the `invar` CLI in a subprocess, paths to test scripts) and the test
groups by cost: tests/unit/ runs no training script (`make test-fast`, under a minute);
everything else is `e2e`, and the costliest of those are also `slow`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def run_invar(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs `python -m invariants.cli ARGS` and returns the completed process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "invariants.cli", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    unit = Path(__file__).resolve().parent / "unit"
    for item in items:
        item.add_marker(pytest.mark.unit if unit in Path(str(item.fspath)).parents else pytest.mark.e2e)

"""The locked environment: uv.lock holds what pyproject.toml asks for, and the suite runs in it.

uv itself is the judge (it is what `make install` runs): `uv lock --check` re-resolves
pyproject.toml against the lock without the network, and `uv sync --check` compares the
installed environment with the lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.project import REPO

pytestmark = pytest.mark.slow


def _uv() -> str:
    """The uv that `make install` uses (.tools/bin/uv), else one on PATH."""
    local = REPO / ".tools" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    assert found, "uv not found: run `make install` (it puts uv in .tools/)"
    return found


def _uv_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_OFFLINE": "1"}
    return subprocess.run([_uv(), *args, "--python", sys.executable], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _project_copy(tmp_path: Path) -> Path:
    """pyproject.toml and uv.lock alone in a fresh folder, so a test may edit them."""
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_lock_satisfies_pyproject(tmp_path: Path) -> None:
    result = _uv_run("lock", "--check", cwd=_project_copy(tmp_path))
    assert result.returncode == 0, f"uv.lock is stale, run `make lock`:\n{result.stderr}"


@pytest.mark.parametrize("old, new", [
    ('"scikit-learn>=1.5"', '"scikit-learn>=99"'),  # a version the lock does not hold
    ('"tqdm>=4.66",', '"tqdm>=4.66", "xarray>=2024.1",'),  # a package the lock does not hold
])
def test_lock_check_fails_when_pyproject_asks_for_more(tmp_path: Path, old: str, new: str) -> None:
    project = _project_copy(tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert old in text
    pyproject.write_text(text.replace(old, new))
    result = _uv_run("lock", "--check", cwd=project)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr or "No solution found" in result.stderr, result.stderr


def test_the_suite_runs_in_the_locked_environment() -> None:
    """Every package the lock lists for this Python is installed at its locked version."""
    env = {"UV_PROJECT_ENVIRONMENT": sys.prefix}
    result = subprocess.run([_uv(), "sync", "--check", "--locked", "--all-extras", "--offline",
                             "--python", sys.executable], cwd=REPO, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the environment differs from uv.lock, run `make install`:\n{result.stderr}"

"""Shared fixtures: the project root and the real data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.project import REPO, SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that need it fail (never skip) when it is missing."""
    if not (SHARED_DATA / "mexico" / "inegi_localities.parquet").is_file():
        pytest.fail(f"real data not found at {SHARED_DATA}: clone the project beside ../shared")
    return SHARED_DATA


@pytest.fixture
def in_repo(monkeypatch) -> Path:
    """Run with the project root as working directory (where params.yaml lives)."""
    monkeypatch.chdir(REPO)
    return REPO

"""Shared fixtures: the project root and the real data in ../shared/data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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


def heavy_imports_after(args: list[str]) -> tuple[int, list[str]]:
    """Run `urbanmap <args>` in a fresh interpreter; return its exit status and the
    heavy libraries (torch, lightning, torchvision, mlflow) it imported."""
    import subprocess
    import sys

    code = (
        "import sys; from urbanmap.cli import main; "
        f"rc = main({args!r}); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'torchvision', 'mlflow')); "
        "print(rc, heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    rc, heavy = result.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(rc), ast.literal_eval(heavy)


def expect_error(capsys, folder: Path, args: list[str], *fragments: str) -> str:
    """Run the CLI in-process; assert exit status 2, one stderr line holding every
    fragment, and no file written under `folder` (no output, no temporary left)."""
    from urbanmap.cli import main

    before = {p for p in folder.rglob("*") if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    written = {p for p in folder.rglob("*") if p.is_file()} - before
    assert not written, written
    return err

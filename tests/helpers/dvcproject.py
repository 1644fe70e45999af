"""A throwaway clone of this project, with ../shared beside it, for tests that run DVC.

The clone holds the working tree's files (tracked and not ignored), committed to a fresh
git repository, and a params.yaml composed for a small region, so `dvc repro`, `push`,
`pull` and `exp run` run there exactly as in a user's clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from helpers.project import REPO

#: A 6 km x 6 km window on Mexico City's eastern fringe (36 cells, both classes), with a
#: model and folds sized so that the whole pipeline runs in seconds.
SMALL = [
    "data.name=small",
    "data.window=[2808000,831000,2814000,837000]",
    "cv.n_splits=3",
    "model.estimator.n_estimators=20",
    "tracking.enabled=false",
]


def sh(*args, cwd, check=True, env=None) -> subprocess.CompletedProcess:
    """Run a command; on failure, the assertion shows its output."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


def make_clone(parent: Path, overrides=SMALL, remote: Path | None = None) -> Path:
    """Copy the project to parent/urbanmap (with parent/shared -> the real shared/),
    compose params.yaml with `overrides`, point the default remote at `remote`, commit."""
    parent.mkdir(parents=True, exist_ok=True)
    shared = parent / "shared"
    if not shared.exists():
        shared.symlink_to(REPO.parent / "shared")
    clone = parent / "urbanmap"
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=REPO).stdout
    for name in filter(None, files.split("\0")):
        source = REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    (clone / "dvc.lock").unlink(missing_ok=True)
    sh("git", "init", "-q", "-b", "main", cwd=clone)
    sh("git", "config", "user.email", "ci@example.org", cwd=clone)
    sh("git", "config", "user.name", "ci", cwd=clone)
    sh("urbanmap", "params", *overrides, cwd=clone)
    if remote is not None:
        sh("dvc", "remote", "modify", "store", "url", remote, cwd=clone)
    sh("git", "add", "-A", cwd=clone)
    sh("git", "commit", "-qm", "project", cwd=clone)
    return clone


def stages_run(repro_output: str) -> list[str]:
    """Names of the stages `dvc repro` ran, from its output."""
    return [line.split("'")[1] for line in repro_output.splitlines() if line.startswith("Running stage")]

"""Where the project and its real data are."""

from __future__ import annotations

from pathlib import Path

#: The repository root (params.yaml, conf/, dvc.yaml).
REPO = Path(__file__).resolve().parents[2]
#: ../shared/data beside the clone (see ../shared/data/SOURCES.md).
SHARED_DATA = REPO.parent / "shared" / "data"

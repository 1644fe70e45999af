"""Where each stage writes, from the config. dvc.yaml declares the same paths
(a test checks that they agree)."""

from __future__ import annotations

from pathlib import Path


def region_dir(cfg) -> Path:
    """`<out_dir>/<data.name>/`: every output of one region lives here."""
    return Path(cfg.out_dir) / cfg.data.name


def grid(cfg) -> Path:
    return region_dir(cfg) / "grid.parquet"


def labels(cfg) -> Path:
    return region_dir(cfg) / "labels.parquet"


def label_summary(cfg) -> Path:
    return region_dir(cfg) / "label_summary.json"

"""Overrides and trained regions for the patches / train / evaluate tests, on the tiny
region of urbanmap.examples.tiny."""

from __future__ import annotations

from pathlib import Path

from helpers.project import REPO
from urbanmap.core import config
from urbanmap.examples.tiny import make_region
from urbanmap.training import patches, train


def overrides(root: Path, name: str = "tiny", *extra: str) -> list[str]:
    """Overrides for a fast run on a region written by make_region: 100 cells per class,
    3 folds, 20 trees, tracking off, LeNet for 1 epoch."""
    return [
        f"out_dir={root}", f"data.name={name}", "patches.n_per_class=100", "cv.n_splits=3",
        "tracking.enabled=false", *extra,
    ]


#: Overrides that make each model quick on a few hundred patches.
FAST = {
    "extra_trees": ["model.estimator.n_estimators=20"],
    "lenet": ["model=lenet", "model.trainer.max_epochs=1", "model.trainer.batch_size=64"],
    "resnet18": ["model=resnet18", "model.trainer.max_epochs=1", "model.trainer.batch_size=64"],
    "random_forest": ["model=random_forest", "model.estimator.n_estimators=20"],
    "hist_gradient_boosting": ["model=hist_gradient_boosting", "model.estimator.max_iter=30"],
    "logistic_regression": ["model=logistic_regression"],
}


def patched_region(root: Path) -> Path:
    """A tiny labelled region with its mosaic and patches (100 per class) under `root`."""
    make_region(root)
    patches.run(config.load(REPO, overrides(root)))
    return root


def trained_region(root: Path):
    """A tiny labelled region with its mosaic, patches and a trained Extra Trees model
    under `root`; returns the config that made them."""
    make_region(root)
    cfg = config.load(REPO, overrides(root, "tiny", *FAST["extra_trees"]))
    patches.run(cfg)
    train.run(cfg)
    return cfg

"""The `train` stage: cross-validation over the patches, then the final model.

1. Folds from the `cv` group (cv.py): stratified k-fold (the pilot's 10-fold protocol)
   or spatial blocks.
2. For each fold, a fresh model from the `model` group (models/) is fitted on the other
   folds and predicts the fold: out-of-fold ``p_urban`` for every sampled cell, written
   to ``<region_dir>/cv_predictions.parquet`` (columns fold, cell_id, col, row, x, y,
   y_true, p_urban, y_pred; y 1 = urban; x, y cell centres in metres of the grid CRS;
   y_pred = p_urban >= 0.5).
3. The final model is refitted on all sampled cells and saved in
   ``<region_dir>/model/`` (git-ignored, a DVC output) with ``model_card.json``.

Every model of a run uses the global seed, so a run is reproducible bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf
from tqdm import tqdm

from urbanmap.core import paths
from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_output
from urbanmap.training import models
from urbanmap.training.cv import folds_from_config
from urbanmap.training.patches import CLASSES, PatchSet, load_patches

THRESHOLD = 0.5


def check_patches(ps: PatchSet, context: str) -> None:
    """InputError if any patch holds NaN or infinite values."""
    bad = ~np.isfinite(ps.patches.reshape(len(ps), -1)).all(axis=1)
    if bad.any():
        raise InputError(
            f"{context}: NaN or infinite values in {int(bad.sum()):,} of {len(ps):,} patches "
            f"(first: cell {ps.cell_id[np.flatnonzero(bad)[0]]})"
        )

def cross_validate(ps: PatchSet, folds: np.ndarray, make: Callable[[], object], progress: bool = True) -> tuple[pd.DataFrame, list[float]]:
    """Out-of-fold predictions of fresh models from `make`.

    Args:
        ps: the patches; folds: (n,) int fold of each sample (0..k-1).
        make: returns an unfitted PatchClassifier.
    Returns:
        (one row per sample in fold order: fold, cell_id, col, row, x, y, y_true, p_urban,
        y_pred; seconds to fit and predict each fold).
    """
    parts, seconds = [], []
    for k in tqdm(range(int(folds.max()) + 1), desc="folds", unit="fold", disable=not progress or None, leave=False):
        test = folds == k
        start = time.perf_counter()
        clf = make().fit(ps.patches[~test], ps.label[~test])
        p = clf.predict_proba(ps.patches[test])
        seconds.append(time.perf_counter() - start)
        parts.append(
            pd.DataFrame(
                {
                    "fold": np.full(int(test.sum()), k, np.int64),
                    "cell_id": ps.cell_id[test],
                    "col": ps.col[test],
                    "row": ps.row[test],
                    "x": ps.x[test],
                    "y": ps.y[test],
                    "y_true": ps.label[test].astype(np.int64),
                    "p_urban": p,
                    "y_pred": (p >= THRESHOLD).astype(np.int64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True), seconds

def write_predictions(path, frame: pd.DataFrame, meta: dict) -> None:
    """Parquet with `meta` (model, cv, seed, ...) in the file's key-value metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"urbanmap:cv": json.dumps(meta).encode()})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)

def run(cfg) -> None:
    """The stage: patches.npz -> cv_predictions.parquet, model/ (final model + card)."""
    path = paths.patches(cfg)
    ps = load_patches(path)
    check_patches(ps, str(path))
    seed, threads = int(cfg.seed), int(cfg.compute.get("threads", 1) or 1)
    folds = folds_from_config(cfg.cv, ps.label, ps.x, ps.y, seed, context=str(path))

    def make():
        return models.build(cfg.model, ps.bands, ps.patch_size, seed, threads)

    make()  # a bad model config fails here, before any fitting
    predictions, seconds = cross_validate(ps, folds, make)
    start = time.perf_counter()
    final = make().fit(ps.patches, ps.label)
    final_seconds = time.perf_counter() - start

    meta = {"model": str(cfg.model.name), "cv": str(cfg.cv.name), "n_splits": int(cfg.cv.n_splits), "seed": seed}
    card = {
        "name": str(cfg.model.name),
        "kind": str(cfg.model.kind),
        "bands": list(ps.bands),
        "patch_size": ps.patch_size,
        "cell_size": ps.cell_size,
        "pixel_size": ps.cell_size / ps.patch_size,
        "crs": ps.crs,
        "classes": list(CLASSES),
        "threshold": THRESHOLD,
        "year": ps.year,
        "samples": len(ps),
        "seed": seed,
        "config": OmegaConf.to_container(cfg.model, resolve=True),
        # No timings here: the model folder is a DVC output that later stages depend on, so
        # the same config and seed must give the same bytes (timings are printed instead).
        "cv": meta,
    }
    write_predictions(paths.cv_predictions(cfg), predictions, meta)
    models.save(final, paths.model_dir(cfg), card)
    acc = float((predictions["y_pred"] == predictions["y_true"]).mean())
    print(
        f"train ({cfg.model.name}, {cfg.cv.name} {int(folds.max()) + 1} folds): {len(ps):,} cells, "
        f"out-of-fold accuracy {acc:.4f}, {sum(seconds) + final_seconds:.1f} s -> {paths.model_dir(cfg)}"
    )

"""The `train` stage: cross-validation over the patches, then the final model.

1. Folds from the `cv` group (cv.py): stratified k-fold (the pilot's 10-fold protocol)
   or spatial blocks.
2. For each fold, a fresh model from the `model` group (models/) is fitted on the other
   folds and predicts the fold: out-of-fold ``p_urban`` for every sampled cell, written
   to ``<region_dir>/cv_predictions.parquet`` (columns fold, cell_id, col, row, x, y,
   y_true, p_urban, y_pred, repeat; y 1 = urban; x, y cell centres in metres of the grid
   CRS; y_pred = p_urban >= 0.5). With ``cv.repeats`` R > 1 the whole split is drawn R
   times (repeat r from seed + r), and every cell has one row per repeat.
3. The final model is refitted on all sampled cells and saved in
   ``<region_dir>/model/`` (git-ignored, a DVC output) with ``model_card.json``.

Every model of a run uses the global seed, so a run is reproducible bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from urbanmap.core import paths
from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_output
from urbanmap.training import models
from urbanmap.training.cv import CvSettings
from urbanmap.training.models import PatchClassifier
from urbanmap.training.patchset import CLASSES, PatchSet, load_patches

THRESHOLD = 0.5


@dataclass(frozen=True)
class TrainSettings:
    """What the train stage reads from the config, checked.

    Attributes:
        patches: patches.npz (input).
        predictions: cv_predictions.parquet (output).
        model_dir: the final model's folder (output).
        model: the `model` config node, as models.build takes it (the model zoo's typed
            construction: kind, estimator or net, features, optimizer, trainer).
        model_name: model.name (e.g. extra_trees, lenet).
        model_kind: model.kind (sklearn or torch; checked by models.build).
        seed: the global seed, of every model of the run.
        threads: compute.threads (1 when unset): the threads a torch model trains on.
        cv: the cross-validation scheme (`cv` group).
    """

    patches: Path
    predictions: Path
    model_dir: Path
    model: DictConfig
    model_name: str
    model_kind: str
    seed: int
    threads: int
    cv: CvSettings

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrainSettings:
        """Read the settings; InputError naming the config key that is wrong."""
        if cfg.model.get("name") is None:
            raise InputError("model.name: missing (the model group's name, e.g. extra_trees)")
        models.check(cfg.model, int(cfg.seed))
        return cls(
            patches=paths.patches(cfg), predictions=paths.cv_predictions(cfg), model_dir=paths.model_dir(cfg),
            model=cfg.model, model_name=str(cfg.model.name), model_kind=str(cfg.model.get("kind")),
            seed=int(cfg.seed), threads=int(cfg.compute.get("threads", 1) or 1), cv=CvSettings.from_config(cfg),
        )


def check_patches(ps: PatchSet, context: str) -> None:
    """InputError if any patch holds NaN or infinite values."""
    bad = ~np.isfinite(ps.patches.reshape(len(ps), -1)).all(axis=1)
    if bad.any():
        raise InputError(
            f"{context}: NaN or infinite values in {int(bad.sum()):,} of {len(ps):,} patches "
            f"(first: cell {ps.cell_id[np.flatnonzero(bad)[0]]})"
        )


def cross_validate(ps: PatchSet, folds: np.ndarray, make: Callable[[], PatchClassifier],
                   progress: bool = True) -> tuple[pd.DataFrame, list[float]]:
    """Out-of-fold predictions of fresh models from `make`.

    Args:
        ps: the patches; folds: (n,) int fold of each sample (0..k-1).
        make: returns an unfitted PatchClassifier.
    Returns:
        (one row per sample in fold order: fold, cell_id, col, row, x, y, y_true, p_urban,
        y_pred; seconds to fit and predict each fold).
    """
    parts: list[pd.DataFrame] = []
    seconds: list[float] = []
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


def write_predictions(path: str | os.PathLike[str], frame: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Parquet with `meta` (model, cv, seed, ...) in the file's key-value metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"urbanmap:cv": json.dumps(meta).encode()})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)


def model_card(settings: TrainSettings, ps: PatchSet, meta: dict[str, Any]) -> dict[str, Any]:
    """The general entries of model_card.json (the model adds its own, models.save)."""
    return {
        "name": settings.model_name,
        "kind": settings.model_kind,
        "bands": list(ps.bands),
        "patch_size": ps.patch_size,
        "cell_size": ps.cell_size,
        "pixel_size": ps.cell_size / ps.patch_size,
        "crs": ps.crs,
        "classes": list(CLASSES),
        "threshold": THRESHOLD,
        "year": ps.year,
        "samples": len(ps),
        "seed": settings.seed,
        "config": OmegaConf.to_container(settings.model, resolve=True),
        # No timings here: the model folder is a DVC output that later stages depend on, so
        # the same config and seed must give the same bytes (timings are printed instead).
        "cv": meta,
    }


def file_md5(path: Path) -> str:
    """The MD5 of a file, as DVC records it in dvc.lock (hex)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_stamp(patches_md5: str, settings: TrainSettings) -> str:
    """The run's stamp, written into both outputs (the model card's and the predictions'
    `cv.run`): the first 16 hex digits of the SHA-256 of the patches file's MD5, the
    model and CV config and the seed. The same inputs give the same stamp (the outputs
    stay the same bytes); two outputs with different stamps come from different runs."""
    setup = {"patches": patches_md5, "model": OmegaConf.to_container(settings.model, resolve=True),
             "cv": dataclasses.asdict(settings.cv), "seed": settings.seed}
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:16]


def run(cfg: DictConfig) -> None:
    """The stage: patches.npz -> cv_predictions.parquet, model/ (final model + card)."""
    settings = TrainSettings.from_config(cfg)
    path = settings.patches
    ps = load_patches(path)
    check_patches(ps, str(path))
    seed = settings.seed
    md5 = file_md5(path)
    make = functools.partial(models.build, settings.model, ps.bands, ps.patch_size, seed, settings.threads)
    make()  # a bad model config fails here, before any fitting
    parts, seconds = [], []
    for repeat in range(settings.cv.repeats):  # repeat r splits from seed + r; every model keeps the seed
        folds = settings.cv.folds(ps.label, ps.x, ps.y, seed + repeat, context=str(path))
        part, part_seconds = cross_validate(ps, folds, make)
        parts.append(part.assign(repeat=np.int64(repeat)))
        seconds += part_seconds
    predictions = pd.concat(parts, ignore_index=True)
    start = time.perf_counter()
    final = make().fit(ps.patches, ps.label)
    final_seconds = time.perf_counter() - start

    features = settings.model.get("features")  # none for the networks, which read the whole patch
    meta = {"model": settings.model_name, "features": list(features.groups) if features is not None else ["patch"],
            "cv": settings.cv.name, "n_splits": settings.cv.n_splits, "repeats": settings.cv.repeats, "seed": seed, "run": run_stamp(md5, settings),
            "patches": {"path": str(path), "md5": md5}}
    # model/ first, the predictions last: a run stopped between the two leaves the new
    # model beside the previous predictions, whose stamp then differs (evaluate refuses)
    models.save(final, settings.model_dir, model_card(settings, ps, meta))
    write_predictions(settings.predictions, predictions, meta)
    acc = float((predictions["y_pred"] == predictions["y_true"]).mean())
    print(
        f"train ({settings.model_name}, {settings.cv.name} {settings.cv.n_splits} folds x {settings.cv.repeats}): {len(ps):,} cells, "
        f"out-of-fold accuracy {acc:.4f}, {sum(seconds) + final_seconds:.1f} s -> {settings.model_dir}"
    )

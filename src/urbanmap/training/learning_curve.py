"""The `learning_curve` stage: accuracy against training sample size.

Does the pilot's 20,000 cells per class matter, or would 500 do? For each size n in
``learning_curve.sizes`` (cells per class) and each of the first ``learning_curve.folds``
test folds of the configured CV scheme (``cv``, the same folds as `train`), a fresh
model (``model``) is fitted on n cells of each class drawn from the other folds and
scores the whole test fold. The draws are nested (the 100 cells of a class hold the 50),
from one seeded permutation per fold, so the curve moves only with n. A size above what
the training folds hold is cut to what they hold (``capped`` in the outputs).

scikit-learn's ``learning_curve`` is not used: it needs a scikit-learn estimator (the
torch models are not) and takes the first n training samples whatever their class,
where the pilot's sampling is balanced per class.

Outputs:

- ``<region_dir>/plots/learning_curve.csv``: one row per size: n_per_class, capped,
  folds, and the mean and sample standard deviation over folds of overall_accuracy and
  macro_f1 (a DVC plot, beside evaluate's);
- ``<region_dir>/learning_curve/folds.csv``: one row per size and fold, with the cells
  the model was fitted on;
- ``<region_dir>/learning_curve/learning_curve.png``: the mean with a band of one
  standard deviation, against n on a log scale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from urbanmap.core import paths
from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_directory, atomic_output
from urbanmap.training import models
from urbanmap.training.patchset import PatchSet, load_patches
from urbanmap.training.train import THRESHOLD, TrainSettings, check_patches

COLUMNS = ("n_per_class", "capped", "folds", "overall_accuracy", "overall_accuracy_std", "macro_f1", "macro_f1_std")


@dataclass(frozen=True)
class LearningCurveSettings:
    """The stage's settings: the training settings plus the curve's own.

    Attributes:
        train: the `train` stage's settings (patches, model, cv, seed, threads).
        sizes: cells per class to fit on, ascending, each >= 1.
        folds: how many of the CV's test folds to score (1 .. cv.n_splits).
        out: the output folder, ``<region_dir>/learning_curve``.
        curve: the DVC plot, ``<region_dir>/plots/learning_curve.csv``.
    """

    train: TrainSettings
    sizes: tuple[int, ...]
    folds: int
    out: Path
    curve: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> LearningCurveSettings:
        """Read the settings; InputError naming the config key that is wrong."""
        train = TrainSettings.from_config(cfg)
        node = cfg.get("learning_curve") or {}
        raw = list(node.get("sizes") or [])
        try:
            sizes = tuple(sorted({int(s) for s in raw}))
            fractional = any(float(s) != int(s) for s in raw)
        except (TypeError, ValueError):
            raise InputError(f"learning_curve.sizes: expected a list of whole numbers of cells per class, got {raw}") from None
        if not sizes or sizes[0] < 1 or fractional:
            raise InputError(f"learning_curve.sizes: expected a list of whole numbers >= 1, got {raw}")
        folds = node.get("folds", train.cv.n_splits)
        if isinstance(folds, bool) or not isinstance(folds, int) or not 1 <= folds <= train.cv.n_splits:
            raise InputError(f"learning_curve.folds: expected a whole number from 1 to cv.n_splits={train.cv.n_splits}, got {folds}")
        return cls(train, sizes, folds, paths.region_dir(cfg) / "learning_curve", paths.plots_dir(cfg) / "learning_curve.csv")


def nested_draws(label: np.ndarray, pool: np.ndarray, sizes: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of n cells per class from `pool`, for each n in `sizes`, nested.

    Args:
        label: (n,) 0/1 class of every sample.
        pool: indices the draws may take (the training folds).
        sizes: cells per class, ascending.
    Returns:
        one index array per size: the first n of each class's seeded permutation (all of
        the class when it has fewer than n).
    """
    orders = [rng.permutation(pool[label[pool] == c]) for c in (0, 1)]
    return [np.sort(np.concatenate([order[:n] for order in orders])) for n in sizes]


def score(y_true: np.ndarray, p_urban: np.ndarray) -> dict[str, float]:
    """Overall accuracy and macro F1 of p_urban >= THRESHOLD against (n,) 0/1 labels."""
    from sklearn.metrics import accuracy_score, f1_score

    y_pred = (p_urban >= THRESHOLD).astype(np.int64)
    return {"overall_accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def fold_scores(ps: PatchSet, folds: np.ndarray, settings: LearningCurveSettings) -> pd.DataFrame:
    """One row per size and scored fold: n_per_class, capped, fold, train_cells, metrics."""
    t = settings.train
    make = functools.partial(models.build, t.model, ps.bands, ps.patch_size, t.seed, t.threads)
    rows: list[dict[str, Any]] = []
    for k in range(settings.folds):
        test = folds == k
        pool = np.flatnonzero(~test)
        available = int(min(np.bincount(ps.label[pool], minlength=2)))
        sizes = tuple(sorted({min(n, available) for n in settings.sizes}))
        draws = nested_draws(ps.label, pool, sizes, np.random.default_rng([t.seed, k]))
        for n, train_idx in zip(sizes, draws, strict=True):
            clf = make().fit(ps.patches[train_idx], ps.label[train_idx])
            metrics = score(ps.label[test], clf.predict_proba(ps.patches[test]))
            rows.append({"n_per_class": n, "capped": n == available and n < max(settings.sizes), "fold": k,
                         "train_cells": len(train_idx), **metrics})
    return pd.DataFrame(rows)


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof 1; 0 for one fold) of each size's fold scores."""
    grouped = per_fold.groupby("n_per_class", sort=True)
    out = grouped.agg(capped=("capped", "any"), folds=("fold", "size"),
                      overall_accuracy=("overall_accuracy", "mean"), overall_accuracy_std=("overall_accuracy", "std"),
                      macro_f1=("macro_f1", "mean"), macro_f1_std=("macro_f1", "std")).reset_index()
    return out.fillna({"overall_accuracy_std": 0.0, "macro_f1_std": 0.0})[list(COLUMNS)].round(6)


def plot(curve: pd.DataFrame, title: str, path: Path) -> None:
    """The curve as a PNG: mean overall accuracy and a one-std band against log n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, mean, std = curve["n_per_class"], curve["overall_accuracy"], curve["overall_accuracy_std"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.fill_between(n, mean - std, mean + std, alpha=0.25, label="± 1 std over folds")
    ax.plot(n, mean, marker="o", label="overall accuracy")
    ax.set_xscale("log")
    ax.set_xlabel("training cells per class")
    ax.set_ylabel("overall accuracy (test folds)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def run(cfg: DictConfig) -> None:
    """The stage: patches.npz -> learning_curve/ (learning_curve.csv, folds.csv, PNG)."""
    settings = LearningCurveSettings.from_config(cfg)
    t = settings.train
    ps = load_patches(t.patches)
    check_patches(ps, str(t.patches))
    folds = t.cv.folds(ps.label, ps.x, ps.y, t.seed, context=str(t.patches))
    models.build(t.model, ps.bands, ps.patch_size, t.seed, t.threads)  # a bad model config fails before fitting
    per_fold = fold_scores(ps, folds, settings)
    curve = summarise(per_fold)
    title = f"{t.model_name}, {t.cv.name} CV ({settings.folds} of {t.cv.n_splits} test folds)"
    with atomic_directory(settings.out) as tmp:
        per_fold.to_csv(tmp / "folds.csv", index=False, lineterminator="\n", float_format="%.6f")
        plot(curve, title, tmp / "learning_curve.png")
    settings.curve.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(settings.curve) as tmp_csv:
        curve.to_csv(tmp_csv, index=False, lineterminator="\n")
    best = curve.iloc[-1]
    print(f"learning-curve ({title}): OA {curve['overall_accuracy'].iloc[0]:.4f} at {curve['n_per_class'].iloc[0]} "
          f"cells per class, {best['overall_accuracy']:.4f} at {best['n_per_class']} -> {settings.curve}, {settings.out}")

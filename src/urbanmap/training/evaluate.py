"""The `evaluate` stage: the pilot's table from the cross-validation predictions.

From ``cv_predictions.parquet`` (train stage), with scikit-learn's metrics:

- per fold: precision, recall, F1 and support of each class (urban, non_urban), overall
  accuracy, macro and weighted averages of precision / recall / F1, ROC AUC and average
  precision of p_urban;
- over the folds: mean and standard deviation (sample std, ddof 1) of each of those,
  i.e. the pilot's 10-fold table; and, pooled over all out-of-fold predictions, the
  confusion matrix, ROC and precision-recall curves.

Outputs (``<region_dir>/``):

- ``metrics.json``: ``mean``, ``std`` and ``pooled`` metrics (for ``dvc metrics show``);
- ``plots/confusion.csv`` (actual, predicted per cell), ``plots/roc.csv`` (fpr, tpr,
  threshold), ``plots/pr.csv`` (recall, precision, threshold) for ``dvc plots show``;
- ``evaluation/``: ``per_fold.csv``, ``report.md`` (the pilot's figures beside ours),
  ``confusion.png``, ``roc.png``, ``pr.png`` and, for tree models,
  ``importances.csv`` / ``importances.png`` (importance summed per band / index) and
  ``importance_maps.png`` (per-pixel importance of the flattened patch, per band).

Then the run is logged to MLflow (tracking.py) unless ``tracking.enabled`` is false.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from omegaconf import DictConfig

from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_directory
from urbanmap.training import models, tracking
from urbanmap.training.patchset import CLASSES
from urbanmap.training.tracking import TrackingSettings

#: The pilot's 10-fold cross-validation results (INEGI / UNECE HLG-MOS; ../shared/DESIGN.md).
PILOT = {
    "extra_trees": {
        "overall_accuracy": 0.9287, "macro_f1": 0.9287,
        "urban_precision": 0.9344, "urban_recall": 0.9222, "urban_f1": 0.9282,
        "non_urban_precision": 0.9231, "non_urban_recall": 0.9353, "non_urban_f1": 0.9292,
    },
    "lenet": {
        "overall_accuracy": 0.9087, "macro_f1": 0.9087,
        "urban_precision": 0.9047, "urban_recall": 0.9145, "urban_f1": 0.9093,
        "non_urban_precision": 0.9137, "non_urban_recall": 0.9030, "non_urban_f1": 0.9081,
    },
}

TABLE = ["overall_accuracy", "macro_f1", "urban_precision", "urban_recall", "urban_f1",
         "non_urban_precision", "non_urban_recall", "non_urban_f1"]


@dataclass(frozen=True)
class EvaluateSettings:
    """What the evaluate stage reads from the config.

    Attributes:
        predictions: cv_predictions.parquet (input, the train stage's).
        model_dir: the final model's folder (input).
        metrics: metrics.json (output, DVC metrics).
        plots_dir: plots/ (output: confusion.csv, roc.csv, pr.csv for dvc plots).
        evaluation_dir: evaluation/ (output: per-fold table, report, figures).
        region: data.name, named in the report and the MLflow runs.
        cv_name: cv.name, for predictions whose file does not name their scheme.
        tracking: the MLflow settings, or None when tracking.enabled is false.
    """

    predictions: Path
    model_dir: Path
    metrics: Path
    plots_dir: Path
    evaluation_dir: Path
    region: str
    cv_name: str
    tracking: TrackingSettings | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> EvaluateSettings:
        """Read the settings (paths, data.name, cv.name, the tracking section)."""
        return cls(
            predictions=paths.cv_predictions(cfg), model_dir=paths.model_dir(cfg), metrics=paths.metrics(cfg),
            plots_dir=paths.plots_dir(cfg), evaluation_dir=paths.evaluation_dir(cfg), region=str(cfg.data.name),
            cv_name=str(cfg.cv.name), tracking=TrackingSettings.from_config(cfg),
        )


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, p_urban: np.ndarray | None = None) -> dict[str, float]:
    """Plainly named metrics of one set of predictions (labels 1 = urban, 0 = non_urban).

    Keys: ``<class>_precision|recall|f1|support`` for each class, ``overall_accuracy``,
    ``macro_precision|recall|f1``, ``weighted_precision|recall|f1`` and, when `p_urban`
    is given and both classes are present, ``roc_auc`` and ``average_precision``.
    A class with no prediction (or no sample) gets precision (recall) 0.
    """
    from sklearn.metrics import accuracy_score, average_precision_score, precision_recall_fscore_support, roc_auc_score

    m: dict[str, float] = {}
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1], zero_division=0)
    for i, c in enumerate(CLASSES):
        m[f"{c}_precision"], m[f"{c}_recall"], m[f"{c}_f1"], m[f"{c}_support"] = float(p[i]), float(r[i]), float(f[i]), float(s[i])
    m["overall_accuracy"] = float(accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1], average=avg, zero_division=0)
        m[f"{avg}_precision"], m[f"{avg}_recall"], m[f"{avg}_f1"] = float(p), float(r), float(f)
    if p_urban is not None and len(np.unique(y_true)) == 2:
        m["roc_auc"] = float(roc_auc_score(y_true, p_urban))
        m["average_precision"] = float(average_precision_score(y_true, p_urban))
    return m


def fold_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row of `classification_metrics` per fold (index: fold), or per repeat and
    fold (index: repeat, fold) when the predictions hold more than one repeat."""
    keys = ["repeat", "fold"] if "repeat" in predictions and predictions["repeat"].nunique() > 1 else ["fold"]
    rows = {
        k: classification_metrics(g["y_true"].to_numpy(), g["y_pred"].to_numpy(), g["p_urban"].to_numpy())
        for k, g in predictions.groupby(keys if len(keys) > 1 else keys[0], sort=True)
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    if len(keys) > 1:
        table.index = pd.MultiIndex.from_tuples([cast(tuple[int, int], k) for k in table.index], names=keys)
        return table
    table.index = table.index.astype(int)
    return table.rename_axis("fold")


def summarize(predictions: pd.DataFrame) -> dict[str, Any]:
    """{"folds": per-fold table, "mean": {...}, "std": {...}, "pooled": {...},
    "confusion": 2 x 2 counts (rows actual, columns predicted; non_urban, urban)}."""
    from sklearn.metrics import confusion_matrix

    table = fold_table(predictions)
    y, yp, p = (predictions[c].to_numpy() for c in ("y_true", "y_pred", "p_urban"))
    return {
        "folds": table,
        "mean": {k: float(v) for k, v in table.mean().items()},
        "std": {k: float(v) for k, v in table.std(ddof=1).fillna(0.0).items()},
        "pooled": classification_metrics(y, yp, p),
        "confusion": confusion_matrix(y, yp, labels=[0, 1]),
    }


def curves(predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pooled ROC (fpr, tpr, threshold) and precision-recall (recall, precision,
    threshold) curves of p_urban; thresholds clipped to 0..1 (scikit-learn's first ROC
    threshold is +inf)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    y, p = predictions["y_true"].to_numpy(), predictions["p_urban"].to_numpy()
    fpr, tpr, thr = roc_curve(y, p)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.clip(thr, 0, 1)})
    precision, recall, thr = precision_recall_curve(y, p)
    pr = pd.DataFrame({"recall": recall, "precision": precision, "threshold": np.r_[thr, 1.0]})
    return roc, pr


def group_importances(names: list[str], groups: list[str], values: np.ndarray) -> pd.DataFrame:
    """Importances summed per feature group (band or index), largest first."""
    frame = pd.DataFrame({"group": groups, "importance": values})
    order = list(dict.fromkeys(groups))
    out = frame.groupby("group", sort=False)["importance"].sum().reindex(order).reset_index()
    return out.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def metrics_json(summary: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json document: run facts, then mean / std / pooled metric dicts."""
    def r(d: dict[str, float]) -> dict[str, float]:  # stable, readable JSON
        return {k: round(v, 6) for k, v in d.items()}

    return {**meta, "mean": r(summary["mean"]), "std": r(summary["std"]), "pooled": r(summary["pooled"])}


def _pilot_table(mean: dict[str, float], meta: dict[str, Any]) -> list[str]:
    """The pilot's table with this run's row, and the difference to the pilot's model."""
    name = meta["model"]
    lines = [
        "## The pilot's table",
        "",
        "| model | OA | macro F1 | urban P / R / F1 | non-urban P / R / F1 |",
        "|---|---|---|---|---|",
    ]
    for pilot_name, pm in PILOT.items():
        lines.append(
            f"| pilot {pilot_name} (Mexico, 10-fold) | {pm['overall_accuracy']:.4f} | {pm['macro_f1']:.4f} | "
            f"{pm['urban_precision']:.4f} / {pm['urban_recall']:.4f} / {pm['urban_f1']:.4f} | "
            f"{pm['non_urban_precision']:.4f} / {pm['non_urban_recall']:.4f} / {pm['non_urban_f1']:.4f} |"
        )
    lines.append(
        f"| **this run: {name}** ({meta['cv']}) | {mean['overall_accuracy']:.4f} | {mean['macro_f1']:.4f} | "
        f"{mean['urban_precision']:.4f} / {mean['urban_recall']:.4f} / {mean['urban_f1']:.4f} | "
        f"{mean['non_urban_precision']:.4f} / {mean['non_urban_recall']:.4f} / {mean['non_urban_f1']:.4f} |"
    )
    if name in PILOT:
        diff = {k: mean[k] - PILOT[name][k] for k in TABLE}
        lines += ["", "Difference to the pilot's " + name + ": " + ", ".join(f"{k} {v:+.4f}" for k, v in diff.items()) + "."]
    return lines


def _per_class_table(mean: dict[str, float], std: dict[str, float]) -> list[str]:
    """Precision, recall and F1 (mean ± std over folds) per class and averaged; AUCs."""

    def fmt(k: str) -> str:
        return f"{mean[k]:.4f} ± {std[k]:.4f}"

    lines = [
        "## Per class",
        "",
        "| | precision | recall | F1 | support (per fold) |",
        "|---|---|---|---|---|",
    ]
    for c in ("urban", "non_urban"):
        lines.append(f"| {c} | {fmt(c + '_precision')} | {fmt(c + '_recall')} | {fmt(c + '_f1')} | {mean[c + '_support']:.1f} |")
    lines += [
        f"| overall accuracy | | | {fmt('overall_accuracy')} | |",
        f"| macro avg | {fmt('macro_precision')} | {fmt('macro_recall')} | {fmt('macro_f1')} | |",
        f"| weighted avg | {fmt('weighted_precision')} | {fmt('weighted_recall')} | {fmt('weighted_f1')} | |",
    ]
    if "roc_auc" in mean:
        lines += ["", f"ROC AUC {fmt('roc_auc')}; average precision {fmt('average_precision')}."]
    return lines


def _confusion_and_folds(cm: np.ndarray, folds: pd.DataFrame) -> list[str]:
    """The pooled confusion matrix (2 x 2 counts), the figures, and the per-fold table."""
    lines = [
        "## Confusion matrix (all out-of-fold predictions)",
        "",
        "| actual \\ predicted | non_urban | urban |",
        "|---|---|---|",
        f"| non_urban | {cm[0, 0]:,} | {cm[0, 1]:,} |",
        f"| urban | {cm[1, 0]:,} | {cm[1, 1]:,} |",
        "",
        "![confusion](confusion.png) ![ROC](roc.png) ![PR](pr.png)",
        "",
        "## Per fold",
        "",
        "| fold | OA | macro F1 | urban F1 | non-urban F1 | support |",
        "|---|---|---|---|---|---|",
    ]
    for k, row in folds.iterrows():
        lines.append(
            f"| {k} | {row['overall_accuracy']:.4f} | {row['macro_f1']:.4f} | {row['urban_f1']:.4f} | "
            f"{row['non_urban_f1']:.4f} | {int(row['urban_support'] + row['non_urban_support'])} |"
        )
    return lines


def report(summary: dict[str, Any], meta: dict[str, Any], importances: pd.DataFrame | None) -> str:
    """The markdown report: our table beside the pilot's, per-class table, confusion."""
    mean, std = summary["mean"], summary["std"]
    lines = [
        f"# Evaluation: {meta['model']}, {meta['cv']} cross-validation ({meta['folds']} folds)",
        "",
        f"Region `{meta['region']}`, imagery {meta['year']}, {meta['samples']:,} cells "
        f"({meta['samples'] // 2:,} per class), seed {meta['seed']}. Means ± standard deviations over the folds.",
        "",
        *_pilot_table(mean, meta),
        "",
        *_per_class_table(mean, std),
        "",
        *_confusion_and_folds(summary["confusion"], summary["folds"]),
    ]
    if importances is not None:
        lines += ["", "## Feature importances (impurity, final model, summed per band / index)", "",
                  "| group | importance |", "|---|---|"]
        lines += [f"| {g} | {v:.4f} |" for g, v in zip(importances["group"], importances["importance"])]
        lines += ["", "![importances](importances.png)"]
    lines += [
        "",
        "The pilot's figures are for Mexico's 40,000 cells on real Landsat geomedians; a "
        "different region, sample size, imagery or CV scheme (spatial folds are harder) "
        "changes the numbers, so compare like with like.",
        "",
    ]
    return "\n".join(lines)


def _plots(folder: Path, summary: dict[str, Any], predictions: pd.DataFrame, importances: pd.DataFrame | None,
           importance_maps: tuple[list[str], np.ndarray] | None) -> None:
    """PNG figures with scikit-learn's displays (Agg backend) into `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    def save(fig: Any, name: str) -> None:
        fig.savefig(folder / name, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)

    y, p = predictions["y_true"].to_numpy(), predictions["p_urban"].to_numpy()
    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay(summary["confusion"], display_labels=list(CLASSES)).plot(ax=ax, colorbar=False)
    save(fig, "confusion.png")
    fig, ax = plt.subplots(figsize=(4, 4))
    RocCurveDisplay.from_predictions(y, p, ax=ax, name="p_urban")
    save(fig, "roc.png")
    fig, ax = plt.subplots(figsize=(4, 4))
    PrecisionRecallDisplay.from_predictions(y, p, ax=ax, name="p_urban")
    save(fig, "pr.png")
    if importances is not None:
        fig, ax = plt.subplots(figsize=(5, 0.4 * len(importances) + 1))
        ax.barh(importances["group"][::-1], importances["importance"][::-1])
        ax.set_xlabel("impurity importance (sum over the group's features)")
        save(fig, "importances.png")
    if importance_maps is not None:
        bands, maps = importance_maps
        fig, axes = plt.subplots(1, len(bands), figsize=(2.2 * len(bands), 2.4))
        for ax, band, m in zip(np.atleast_1d(axes), bands, maps):
            ax.imshow(m, vmin=0, vmax=maps.max())
            ax.set_title(band)
            ax.axis("off")
        save(fig, "importance_maps.png")


def read_predictions(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The out-of-fold predictions (fold, cell_id, y_true, p_urban, y_pred, ...) and the
    train stage's metadata in the file (model, cv, n_splits, seed); InputError naming
    the file when it is missing, unreadable, lacks columns or holds one class only."""
    path = io.require_file(path, "cross-validation predictions")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types on a bad file
        raise InputError(f"{path}: cannot read predictions: {exc}".splitlines()[0]) from exc
    predictions = table.to_pandas()
    missing = [c for c in ("fold", "cell_id", "y_true", "p_urban", "y_pred") if c not in predictions.columns]
    if missing:
        raise InputError(f"{path}: lacks column(s) {', '.join(missing)}")
    if predictions["y_true"].nunique() < 2:
        raise InputError(f"{path}: one class only; metrics need urban and non_urban cells")
    return predictions, json.loads((table.schema.metadata or {}).get(b"urbanmap:cv", b"{}"))


def importance_tables(clf: Any, card: dict[str, Any]) -> tuple[pd.DataFrame | None, tuple[list[str], np.ndarray] | None]:
    """A tree model's importances summed per band / index (group_importances), and the
    per-pixel importance maps of its flattened patch ((band names, (b, p, p) array));
    (None, None) for a model without importances (torch), None maps without `flat`."""
    imp = getattr(clf, "importances", lambda: None)()
    if imp is None:
        return None, None
    names, groups, values = imp
    importances = group_importances(names, groups, values)
    flat = [i for i, n in enumerate(names) if "[" in n]
    if not flat:
        return importances, None
    b, p = len(card["bands"]), int(card["patch_size"])
    return importances, (card["bands"], np.asarray(values)[flat].reshape(b, p, p))


def write_outputs(settings: EvaluateSettings, summary: dict[str, Any], meta: dict[str, Any], predictions: pd.DataFrame,
                  importances: pd.DataFrame | None, maps: tuple[list[str], np.ndarray] | None) -> None:
    """plots/ (confusion, ROC, PR CSVs) and evaluation/ (per-fold table, importances,
    figures, report), each folder replaced whole, then metrics.json."""
    roc, pr = curves(predictions)
    names = np.asarray(CLASSES)
    confusion = pd.DataFrame({"actual": names[predictions["y_true"]], "predicted": names[predictions["y_pred"]]})
    with atomic_directory(settings.plots_dir) as tmp_plots, atomic_directory(settings.evaluation_dir) as tmp_eval:
        tables = [(confusion, tmp_plots / "confusion.csv"), (roc, tmp_plots / "roc.csv"), (pr, tmp_plots / "pr.csv"),
                  (summary["folds"].reset_index(), tmp_eval / "per_fold.csv")]
        if importances is not None:
            tables.append((importances, tmp_eval / "importances.csv"))
        for frame, target in tables:
            frame.to_csv(target, index=False, float_format="%.6g")
        _plots(tmp_eval, summary, predictions, importances, maps)
        (tmp_eval / "report.md").write_text(report(summary, meta, importances))
    io.write_json(settings.metrics, metrics_json(summary, meta))


def check_same_run(cv_meta: dict[str, Any], card: dict[str, Any], settings: EvaluateSettings) -> None:
    """InputError unless the predictions and the model carry the same train run's stamp
    (train.run_stamp): a train stopped between writing them leaves a mismatched pair."""
    ours, theirs = cv_meta.get("run"), (card.get("cv") or {}).get("run")
    if ours != theirs:
        raise InputError(
            f"{settings.predictions} (run {ours}) and {settings.model_dir / models.CARD} (run {theirs}) come from "
            f"different train runs (one was stopped or failed); run train again"
        )


def run(cfg: DictConfig) -> None:
    """The stage: cv_predictions.parquet + model/ -> metrics.json, plots/, evaluation/, MLflow."""
    settings = EvaluateSettings.from_config(cfg)
    predictions, cv_meta = read_predictions(settings.predictions)
    clf, card = models.load(settings.model_dir)
    check_same_run(cv_meta, card, settings)

    summary = summarize(predictions)
    meta = {
        "model": card["name"], "cv": cv_meta.get("cv", settings.cv_name), "folds": int(predictions["fold"].nunique()),
        "repeats": int(predictions["repeat"].nunique()) if "repeat" in predictions else 1,
        "samples": int(predictions["cell_id"].nunique()), "region": settings.region, "year": card.get("year"), "seed": card.get("seed"),
    }
    importances, maps = importance_tables(clf, card)
    write_outputs(settings, summary, meta, predictions, importances, maps)

    mean, evaluation = summary["mean"], settings.evaluation_dir
    print(
        f"evaluate ({meta['model']}, {meta['cv']} {meta['folds']} folds): OA {mean['overall_accuracy']:.4f}, "
        f"macro F1 {mean['macro_f1']:.4f}, urban F1 {mean['urban_f1']:.4f}, non-urban F1 "
        f"{mean['non_urban_f1']:.4f} -> {settings.metrics}, {evaluation / 'report.md'}"
    )
    if settings.tracking is not None:
        artifacts = [settings.metrics, settings.predictions, *sorted(settings.plots_dir.glob("*.csv")),
                     *sorted(evaluation.iterdir())]
        run_id = tracking.log_experiment(settings.tracking, summary, meta, artifacts, settings.model_dir,
                                         dataset=cv_meta.get("patches"))
        if run_id:
            print(f"evaluate: MLflow run {run_id} at {settings.tracking.uri}")

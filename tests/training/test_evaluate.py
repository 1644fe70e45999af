"""The evaluate stage: metrics layout, per-fold means and stds, plots, report."""

import json

import numpy as np
import pandas as pd
import pytest

from helpers import synthetic
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.examples import tiny
from urbanmap.training import evaluate, train

PNG = b"\x89PNG\r\n\x1a\n"


def test_metrics_of_a_small_hand_computed_case():
    y = np.array([1, 1, 1, 0, 0])
    yp = np.array([1, 0, 1, 0, 1])
    m = evaluate.classification_metrics(y, yp, np.array([0.9, 0.4, 0.8, 0.1, 0.6]))
    assert m["urban_precision"] == pytest.approx(2 / 3) and m["urban_recall"] == pytest.approx(2 / 3)
    assert m["non_urban_precision"] == pytest.approx(1 / 2) and m["non_urban_recall"] == pytest.approx(1 / 2)
    assert m["overall_accuracy"] == pytest.approx(3 / 5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2) / 5)
    assert m["urban_support"] == 3 and m["non_urban_support"] == 2
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 urban/non-urban pairs are ordered


def test_summary_is_mean_and_std_over_folds():
    rng = np.random.default_rng(0)
    pred = pd.DataFrame({"fold": np.repeat([0, 1, 2], 40), "y_true": np.tile([0, 1], 60)})
    pred["p_urban"] = np.clip(pred["y_true"] * 0.6 + rng.random(120) * 0.5, 0, 1)
    pred["y_pred"] = (pred["p_urban"] >= 0.5).astype(int)
    s = evaluate.summarize(pred)
    per_fold = [
        evaluate.classification_metrics(g["y_true"], g["y_pred"])["urban_f1"] for _, g in pred.groupby("fold")
    ]
    assert s["mean"]["urban_f1"] == pytest.approx(np.mean(per_fold))
    assert s["std"]["urban_f1"] == pytest.approx(np.std(per_fold, ddof=1))
    assert s["confusion"].sum() == 120
    assert s["confusion"][1, 1] == ((pred["y_true"] == 1) & (pred["y_pred"] == 1)).sum()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    cfg = synthetic.trained_region(root)
    evaluate.run(cfg)
    return root, cfg


def test_metrics_json_holds_the_pilots_table(evaluated):
    _, cfg = evaluated
    m = json.loads(paths.metrics(cfg).read_text())
    assert (m["model"], m["cv"], m["folds"], m["samples"]) == ("extra_trees", "kfold", 3, 200)
    for part in ("mean", "std", "pooled"):
        for key in evaluate.TABLE + ["weighted_f1", "macro_precision", "weighted_recall"]:
            assert 0 <= m[part][key] <= 1, (part, key)
    per_fold = pd.read_csv(paths.evaluation_dir(cfg) / "per_fold.csv")
    assert len(per_fold) == 3
    assert m["mean"]["overall_accuracy"] == pytest.approx(per_fold["overall_accuracy"].mean(), abs=1e-6)


def test_plots_and_report(evaluated):
    _, cfg = evaluated
    plots, ev = paths.plots_dir(cfg), paths.evaluation_dir(cfg)
    confusion = pd.read_csv(plots / "confusion.csv")
    assert len(confusion) == 200 and set(confusion["actual"]) == {"urban", "non_urban"}
    roc = pd.read_csv(plots / "roc.csv")
    assert roc["fpr"].is_monotonic_increasing and roc["tpr"].iloc[-1] == 1
    assert list(pd.read_csv(plots / "pr.csv").columns) == ["recall", "precision", "threshold"]
    for name in ("confusion.png", "roc.png", "pr.png", "importances.png", "importance_maps.png"):
        assert (ev / name).read_bytes().startswith(PNG), name
    imp = pd.read_csv(ev / "importances.csv")
    assert set(imp["group"]) == set(tiny.BANDS) and imp["importance"].sum() == pytest.approx(1, abs=1e-4)
    report = (ev / "report.md").read_text()
    m = json.loads(paths.metrics(cfg).read_text())
    assert "| pilot extra_trees (Mexico, 10-fold) | 0.9287 | 0.9287 | 0.9344 / 0.9222 / 0.9282 |" in report
    assert "| pilot lenet (Mexico, 10-fold) | 0.9087 | 0.9087 |" in report
    assert f"| **this run: extra_trees** (kfold) | {m['mean']['overall_accuracy']:.4f} |" in report


@pytest.mark.slow
def test_a_torch_model_evaluation_replaces_the_tree_figures(evaluated):
    root, _ = evaluated
    cfg = config.load(REPO, synthetic.overrides(root, "tiny", *synthetic.FAST["lenet"]))
    train.run(cfg)
    evaluate.run(cfg)
    names = {p.name for p in paths.evaluation_dir(cfg).iterdir()}
    assert "importances.png" not in names and "report.md" in names
    assert json.loads(paths.metrics(cfg).read_text())["model"] == "lenet"


def test_evaluate_without_predictions(tmp_path, capsys, in_repo):
    assert main(["evaluate", f"out_dir={tmp_path}"]) == 2
    assert "cv_predictions.parquet: cross-validation predictions not found" in capsys.readouterr().err

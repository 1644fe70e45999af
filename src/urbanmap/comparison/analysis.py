"""The comparison's tables: one row per experiment, one row per pair and metric, the
ranking, and each model's random-minus-spatial gap (see stats for the methods)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from urbanmap.comparison import stats
from urbanmap.comparison.runs import Experiment

#: Metrics compared pair by pair (Holm's correction runs over the pairs of each).
PAIRED = ("overall_accuracy", "macro_f1")
ALPHA = 0.05


@dataclass(frozen=True)
class FoldScores:
    """One experiment's scores per (repeat, fold).

    Attributes:
        scores: metric -> (J,) score of each of the J = repeats x folds test folds.
        n_train, n_test: mean cells per training and test fold (for the correction).
    """

    scores: dict[str, np.ndarray]
    n_train: float
    n_test: float


def fold_scores(e: Experiment) -> FoldScores:
    """Metrics of each (repeat, fold) of an experiment's predictions."""
    groups = e.predictions.groupby(["repeat", "fold"], sort=True)
    counts = np.stack([stats.confusion_counts(g["y_true"].to_numpy(), g["y_pred"].to_numpy()) for _, g in groups])
    sizes = groups.size().to_numpy(np.float64)
    n_test = float(sizes.mean())
    return FoldScores(stats.metrics_from_counts(counts), e.cells - n_test, n_test)


def experiment_rows(experiments: list[Experiment], names: list[str], scores: list[FoldScores],
                    resamples: int, seed: int) -> pd.DataFrame:
    """experiments.csv: per experiment its facts and, per metric, the fold mean with its
    corrected interval and the pooled out-of-fold score with its cell-bootstrap interval."""
    rows = []
    for e, name, fs in zip(experiments, names, scores, strict=True):
        first = e.predictions[e.predictions["repeat"] == e.predictions["repeat"].min()]
        boot = stats.bootstrap_intervals(first["y_true"].to_numpy(), first["y_pred"].to_numpy(), resamples, seed)
        row: dict[str, object] = {"experiment": name, "run": e.label, "model": e.model, "features": "+".join(e.features), "cv": e.cv, "seed": e.seed,
                                  "folds": e.folds, "repeats": e.repeats, "cells": e.cells}
        for m in stats.METRICS:
            fold = stats.corrected_interval(fs.scores[m], fs.n_train, fs.n_test, ALPHA)
            row |= {m: fold.estimate, f"{m}_low": fold.low, f"{m}_high": fold.high,
                    f"pooled_{m}": boot[m].estimate, f"pooled_{m}_low": boot[m].low, f"pooled_{m}_high": boot[m].high}
        rows.append(row)
    return pd.DataFrame(rows)


def same_folds(a: Experiment, b: Experiment) -> str:
    """"" when a and b scored the same cells in the same repeats and folds, else why not."""
    if a.seed != b.seed:
        return f"different seeds ({a.seed} and {b.seed}): the folds differ"
    if a.cv != b.cv:
        return f"different CV schemes ({a.cv} and {b.cv}): the folds differ"
    key = ["repeat", "fold", "cell_id"]
    left, right = (x.predictions[key].sort_values(key).reset_index(drop=True) for x in (a, b))
    if len(left) != len(right) or not left.equals(right):
        return "different cells or folds (same seed and scheme, other patches or fold counts)"
    return ""


def pair_row(a: Experiment, b: Experiment, names: tuple[str, str], fa: FoldScores, fb: FoldScores, metric: str) -> dict[str, object]:
    """One pair and metric: the difference a - b with the corrected t-test where the folds
    are the same, and McNemar's test on the cells both scored (their first repeat)."""
    refused = same_folds(a, b)
    row: dict[str, object] = {"a": names[0], "b": names[1], "metric": metric}
    if refused:
        diff = float(fa.scores[metric].mean() - fb.scores[metric].mean())
        row |= {"diff": diff, "ci_low": np.nan, "ci_high": np.nan, "t": np.nan, "p_corrected_t": np.nan}
    else:
        t, p, ci = stats.corrected_t_test(fa.scores[metric] - fb.scores[metric], fa.n_train, fa.n_test, ALPHA)
        row |= {"diff": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "t": t, "p_corrected_t": p}
    first_a = a.predictions[a.predictions["repeat"] == 0].set_index("cell_id")
    first_b = b.predictions[b.predictions["repeat"] == 0].set_index("cell_id")
    both = first_a.index.intersection(first_b.index)
    if len(both):
        right_a = (first_a.loc[both, "y_pred"] == first_a.loc[both, "y_true"]).to_numpy()
        right_b = (first_b.loc[both, "y_pred"] == first_b.loc[both, "y_true"]).to_numpy()
        only_a, only_b, p_mc = stats.mcnemar_test(right_a, right_b)
        row |= {"mcnemar_cells": len(both), "only_a_right": only_a, "only_b_right": only_b, "p_mcnemar": p_mc}
    else:
        row |= {"mcnemar_cells": 0, "only_a_right": 0, "only_b_right": 0, "p_mcnemar": np.nan}
        refused = refused or "no cell scored by both"
    row["refused_reason"] = refused
    return row


def pair_rows(experiments: list[Experiment], names: list[str], scores: list[FoldScores]) -> pd.DataFrame:
    """pairs.csv: every pair and PAIRED metric, with Holm's correction over the pairs of
    each metric, of the corrected t-test's p (McNemar's where the t-test was refused)."""
    rows = []
    for (i, a), (j, b) in itertools.combinations(enumerate(experiments), 2):
        for metric in PAIRED:
            rows.append(pair_row(a, b, (names[i], names[j]), scores[i], scores[j], metric))
    pairs = pd.DataFrame(rows)
    pairs["p_tested"] = pairs["p_corrected_t"].where(pairs["p_corrected_t"].notna(), pairs["p_mcnemar"])
    pairs["test"] = np.where(pairs["p_corrected_t"].notna(), "corrected t", "McNemar")
    pairs["p_holm"], pairs["significant"] = np.nan, False
    for _, group in pairs.groupby("metric"):
        ok = group["p_tested"].notna()
        adjusted, reject = stats.holm(group.loc[ok, "p_tested"].to_numpy(), ALPHA)
        pairs.loc[group.index[ok], "p_holm"] = adjusted
        pairs.loc[group.index[ok], "significant"] = reject
    return pairs


def ranking(table: pd.DataFrame, pairs: pd.DataFrame, metric: str = "overall_accuracy") -> pd.DataFrame:
    """Experiments by fold-mean `metric`, best first, with the letters of stats.letter_groups."""
    order = table.sort_values(metric, ascending=False, kind="stable")["experiment"].tolist()
    tested = pairs[pairs["metric"] == metric]
    different = {frozenset((str(a), str(b))): bool(sig) for a, b, sig in zip(tested["a"], tested["b"], tested["significant"], strict=True)}
    letters = stats.letter_groups(order, different)
    ranked = table.set_index("experiment").loc[order, [metric, f"{metric}_low", f"{metric}_high"]].reset_index()
    ranked.insert(0, "rank", np.arange(1, len(order) + 1))
    ranked["group"] = [letters[n] for n in order]
    return ranked


def spatial_gaps(experiments: list[Experiment], names: list[str], scores: list[FoldScores],
                 metric: str = "overall_accuracy") -> pd.DataFrame:
    """Per model, feature groups and seed with a kfold and a spatial experiment: kfold
    minus spatial fold-mean `metric`, with a normal interval of the two independent
    corrected variances summed."""
    rows = []
    z = float(scipy_stats.norm.ppf(1 - ALPHA / 2))
    for key in dict.fromkeys((e.model, e.features, e.seed) for e in experiments):
        kinds = {e.cv: (n, fs) for e, n, fs in zip(experiments, names, scores, strict=True)
                 if (e.model, e.features, e.seed) == key}
        if "kfold" not in kinds or "spatial" not in kinds:
            continue
        (nk, k), (ns, s) = kinds["kfold"], kinds["spatial"]
        gap = float(k.scores[metric].mean() - s.scores[metric].mean())
        se = float(np.sqrt(stats.corrected_variance(k.scores[metric], k.n_train, k.n_test)
                           + stats.corrected_variance(s.scores[metric], s.n_train, s.n_test)))
        rows.append({"model": key[0], "features": "+".join(key[1]), "kfold": nk, "spatial": ns, "gap": gap,
                     "ci_low": gap - z * se, "ci_high": gap + z * se})
    return pd.DataFrame(rows, columns=["model", "features", "kfold", "spatial", "gap", "ci_low", "ci_high"])

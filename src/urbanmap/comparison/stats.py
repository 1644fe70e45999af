"""The statistics of a model comparison: intervals of one configuration's scores, paired
tests of two configurations, and a correction over all pairs.

Fold scores of k-fold cross-validation are not independent: any two training sets share
(k - 2) / (k - 1) of their cells, so the plain variance of the fold scores understates
the variance of their mean and a naive t-test declares false wins. Nadeau & Bengio (2003,
Machine Learning 52:239-281) correct it: over J = folds x repeats scores with n_test and
n_train cells per fold, the mean's variance is (1/J + n_test/n_train) s² (s² the sample
variance of the J scores), and the corrected resampled t statistic has J - 1 degrees of
freedom. Two maps scored on the same cells are compared with McNemar's test on the cells
where exactly one of them is right (Foody 2004, Photogrammetric Engineering & Remote
Sensing 70(5):627-633). Holm's step-down correction controls the family-wise error over
all pairs.

scipy (t distribution) and statsmodels (McNemar, Holm) do the distributions; the
Nadeau-Bengio variance and the cell bootstrap are written here, as no library offers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Metrics of one set of 0/1 predictions that the comparison reports.
METRICS = ("overall_accuracy", "macro_f1", "urban_precision", "urban_recall", "urban_f1",
           "non_urban_precision", "non_urban_recall", "non_urban_f1")


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval (level 1 - alpha)."""

    estimate: float
    low: float
    high: float


def corrected_variance(scores: np.ndarray, n_train: float, n_test: float) -> float:
    """Nadeau-Bengio variance of the mean of (J,) fold scores: (1/J + n_test/n_train) s²."""
    scores = np.asarray(scores, np.float64)
    j = len(scores)
    if j < 2:
        return float("nan")
    return float((1.0 / j + n_test / n_train) * scores.var(ddof=1))


def corrected_interval(scores: np.ndarray, n_train: float, n_test: float, alpha: float = 0.05) -> Interval:
    """Mean of (J,) fold scores (proportions) with its corrected t interval (J - 1 degrees
    of freedom), clipped to 0..1."""
    mean = float(np.mean(scores))
    half = float(stats.t.ppf(1 - alpha / 2, len(scores) - 1)) * np.sqrt(corrected_variance(scores, n_train, n_test))
    return Interval(mean, max(0.0, mean - half), min(1.0, mean + half))


def corrected_t_test(diffs: np.ndarray, n_train: float, n_test: float, alpha: float = 0.05) -> tuple[float, float, Interval]:
    """Corrected resampled t-test of (J,) paired fold differences (a - b on the same folds).

    Returns:
        (t statistic, two-sided p-value, mean difference with its corrected interval).
        With all differences equal the variance is 0: p is 0 for a non-zero mean, 1 for 0.
    """
    diffs = np.asarray(diffs, np.float64)
    mean, var = float(diffs.mean()), corrected_variance(diffs, n_train, n_test)
    df = len(diffs) - 1
    if var == 0:
        return (np.inf if mean else 0.0), (0.0 if mean else 1.0), Interval(mean, mean, mean)
    t = mean / np.sqrt(var)
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * np.sqrt(var)
    return float(t), p, Interval(mean, mean - half, mean + half)


def mcnemar_test(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """McNemar's test of two classifiers on the same (n,) cells (bool: each right or not).

    Returns:
        (cells only a got right, cells only b got right, two-sided p-value): the exact
        binomial test when fewer than 25 cells are discordant, else the chi-square with
        continuity correction (statsmodels).
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    table = [[int((a & b).sum()), only_a], [only_b, int((~a & ~b).sum())]]
    result = mcnemar(table, exact=only_a + only_b < 25, correction=True)
    return only_a, only_b, float(result.pvalue)


def holm(pvalues: Sequence[float] | np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjustment of p-values: ((m,) adjusted p, (m,) rejected at alpha)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, np.float64)
    if not len(p):
        return p, p.astype(bool)
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    return adjusted, reject


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(..., 4) counts tp, fp, fn, tn of class 1 (urban) along the last axis of 0/1 arrays."""
    t, p = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    return np.stack([(t & p).sum(-1), (~t & p).sum(-1), (t & ~p).sum(-1), (~t & ~p).sum(-1)], axis=-1)


def metrics_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """`METRICS` from (..., 4) tp, fp, fn, tn counts (precision or recall of a class with
    no prediction or no sample is 0, as in scikit-learn with zero_division=0)."""
    tp, fp, fn, tn = (counts[..., i].astype(np.float64) for i in range(4))

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    out = {"overall_accuracy": ratio(tp + tn, tp + fp + fn + tn)}
    for name, (hit, false_pos, miss) in {"urban": (tp, fp, fn), "non_urban": (tn, fn, fp)}.items():
        precision, recall = ratio(hit, hit + false_pos), ratio(hit, hit + miss)
        out[f"{name}_precision"], out[f"{name}_recall"] = precision, recall
        out[f"{name}_f1"] = ratio(2 * precision * recall, precision + recall)
    out["macro_f1"] = (out["urban_f1"] + out["non_urban_f1"]) / 2
    return out


def bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, resamples: int = 2000, seed: int = 0,
                        alpha: float = 0.05) -> dict[str, Interval]:
    """Percentile intervals of `METRICS` of the pooled (n,) predictions, resampling cells
    with replacement (`resamples` draws from `seed`); the estimate is the full sample's."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    rng = np.random.default_rng(seed)
    full = metrics_from_counts(confusion_counts(y_true, y_pred))
    counts = np.zeros((resamples, 4), np.int64)
    for start in range(0, resamples, 250):  # (250, n) index blocks keep memory at a few MB
        idx = rng.integers(0, len(y_true), (min(250, resamples - start), len(y_true)))
        counts[start:start + len(idx)] = confusion_counts(y_true[idx], y_pred[idx])
    drawn = metrics_from_counts(counts)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    return {m: Interval(float(full[m]), *(float(v) for v in np.percentile(drawn[m], q))) for m in METRICS}


def letter_groups(order: Sequence[str], different: dict[frozenset[str], bool]) -> dict[str, str]:
    """A compact letter display: configurations in `order` (best first) that share a
    letter are not significantly different.

    Each maximal run of consecutive configurations with no significant pair among them
    gets a letter (Piepho 2004's display, for a ranking by one score).
    """
    runs: list[tuple[int, int]] = []
    for i in range(len(order)):
        end = i
        while end + 1 < len(order) and not any(different.get(frozenset((order[k], order[end + 1])), False)
                                                  for k in range(i, end + 1)):
            end += 1
        if not runs or end > runs[-1][1]:
            runs.append((i, end))
    letters = {name: "" for name in order}
    for n, (i, end) in enumerate(runs):
        for name in order[i:end + 1]:
            letters[name] += chr(ord("a") + n) if n < 26 else f"[{n}]"
    return letters

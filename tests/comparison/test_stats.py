"""The comparison's statistics against independent computations (to 1e-6)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from urbanmap.comparison import stats


def test_corrected_t_test_by_hand():
    """Nadeau & Bengio's corrected resampled t-test, worked by hand on 5 differences."""
    d = np.array([0.01, 0.02, -0.005, 0.015, 0.01])
    n_train, n_test = 160.0, 40.0
    mean = (0.01 + 0.02 - 0.005 + 0.015 + 0.01) / 5  # 0.01
    s2 = sum((x - mean) ** 2 for x in d) / 4  # sample variance
    var = (1 / 5 + 40 / 160) * s2  # corrected: (1/J + n_test/n_train) s²
    t_hand = mean / math.sqrt(var)
    t, p, ci = stats.corrected_t_test(d, n_train, n_test)
    assert t == pytest.approx(t_hand, abs=1e-6)
    assert p == pytest.approx(2 * scipy_stats.t.sf(abs(t_hand), 4), abs=1e-6)
    half = scipy_stats.t.ppf(0.975, 4) * math.sqrt(var)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((mean, mean - half, mean + half), abs=1e-6)
    # the naive t-test (no correction) claims more: its p is smaller
    assert scipy_stats.ttest_1samp(d, 0).pvalue < p


def test_corrected_t_test_of_identical_folds():
    assert stats.corrected_t_test(np.zeros(10), 900, 100)[1] == 1.0
    assert stats.corrected_t_test(np.full(10, 0.01), 900, 100)[1] < 1e-12


def test_mcnemar_exact_and_chi_square_by_hand():
    # 3 cells only a gets right, 12 only b: 15 discordant (< 25) -> exact binomial
    a = np.array([True] * 3 + [False] * 12 + [True] * 50 + [False] * 5)
    b = np.array([False] * 3 + [True] * 12 + [True] * 50 + [False] * 5)
    only_a, only_b, p = stats.mcnemar_test(a, b)
    assert (only_a, only_b) == (3, 12)
    exact = min(1.0, 2 * sum(math.comb(15, k) for k in range(0, 4)) / 2 ** 15)
    assert p == pytest.approx(exact, abs=1e-6)
    # 20 and 40 discordant: chi-square with continuity correction, (|b - c| - 1)² / (b + c)
    a = np.array([True] * 20 + [False] * 40 + [True] * 100)
    b = np.array([False] * 20 + [True] * 40 + [True] * 100)
    chi2 = (abs(20 - 40) - 1) ** 2 / 60
    assert stats.mcnemar_test(a, b)[2] == pytest.approx(scipy_stats.chi2.sf(chi2, 1), abs=1e-6)


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    adjusted, reject = stats.holm(p)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-6)
    assert reject.tolist() == [True, False, False, True]


def test_metrics_from_counts_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    m = stats.metrics_from_counts(stats.confusion_counts(y, p))
    assert float(m["overall_accuracy"]) == pytest.approx(accuracy_score(y, p), abs=1e-12)
    assert float(m["macro_f1"]) == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)
    assert float(m["urban_precision"]) == pytest.approx(precision_score(y, p), abs=1e-12)
    assert float(m["non_urban_recall"]) == pytest.approx(recall_score(y, p, pos_label=0), abs=1e-12)


def test_bootstrap_interval_covers_and_shrinks_with_more_cells():
    rng = np.random.default_rng(0)
    small_y = rng.integers(0, 2, 200)
    small_p = np.where(rng.random(200) < 0.9, small_y, 1 - small_y)
    large_y = rng.integers(0, 2, 5000)
    large_p = np.where(rng.random(5000) < 0.9, large_y, 1 - large_y)
    small = stats.bootstrap_intervals(small_y, small_p)["overall_accuracy"]
    large = stats.bootstrap_intervals(large_y, large_p)["overall_accuracy"]
    assert small.low < small.estimate < small.high and large.low < 0.9 < large.high
    assert large.high - large.low < (small.high - small.low) / 3
    # binomial standard error: the percentile interval is about estimate ± 1.96 sqrt(p(1-p)/n)
    se = math.sqrt(large.estimate * (1 - large.estimate) / 5000)
    assert large.high - large.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert stats.bootstrap_intervals(small_y, small_p) == stats.bootstrap_intervals(small_y, small_p)  # seeded


def test_letter_groups():
    order = ["a", "b", "c", "d"]
    different = {frozenset(("a", "c")): True, frozenset(("a", "d")): True, frozenset(("b", "d")): True}
    assert stats.letter_groups(order, different) == {"a": "a", "b": "ab", "c": "bc", "d": "c"}
    assert stats.letter_groups(order, {}) == {n: "a" for n in order}

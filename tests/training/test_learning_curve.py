"""The learning_curve stage: nested balanced draws, the curve per size, bad settings."""

import numpy as np
import pandas as pd
import pytest

from helpers import synthetic
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.training import learning_curve


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    """A synthetic region with its patches (100 per class) cut once."""
    return synthetic.patched_region(tmp_path_factory.mktemp("curve"))


def curve_cfg(root, *extra):
    return config.load(REPO, synthetic.overrides(root, "tiny", *synthetic.FAST["extra_trees"],
                                                 "learning_curve.sizes=[10,5,40,1000]", "learning_curve.folds=2", *extra))


def test_draws_are_balanced_nested_and_from_the_pool():
    label = np.array([0, 1] * 50)
    pool = np.arange(20, 100)
    small, large = learning_curve.nested_draws(label, pool, (5, 20), np.random.default_rng(0))
    assert np.bincount(label[small]).tolist() == [5, 5] and np.bincount(label[large]).tolist() == [20, 20]
    assert set(small) <= set(large) <= set(pool)


def test_curve_per_size_with_the_largest_cut_to_the_training_folds(region):
    cfg = curve_cfg(region)
    learning_curve.run(cfg)
    curve = pd.read_csv(paths.plots_dir(cfg) / "learning_curve.csv")
    folds = pd.read_csv(paths.region_dir(cfg) / "learning_curve" / "folds.csv")
    # 3 folds of 100 cells per class: the training folds hold 66 or 67 of each class
    assert curve["n_per_class"].tolist()[:3] == [5, 10, 40]
    assert curve["n_per_class"].iloc[-1] in (66, 67) and curve["capped"].tolist() == [False, False, False, True]
    assert (curve["folds"] == 2).all() and sorted(folds["fold"].unique()) == [0, 1]
    assert (folds["train_cells"] == 2 * folds["n_per_class"]).all()
    assert curve["overall_accuracy"].between(0.5, 1).all()
    # the mean of the fold scores, and more cells do not make the tiny region's model worse
    assert curve["overall_accuracy"].iloc[1] == pytest.approx(folds.query("n_per_class == 10")["overall_accuracy"].mean(), abs=1e-6)
    assert curve["overall_accuracy"].iloc[-1] >= curve["overall_accuracy"].iloc[0]
    assert (paths.region_dir(cfg) / "learning_curve" / "learning_curve.png").stat().st_size > 10_000


def test_same_seed_same_bytes(region, tmp_path):
    outputs = []
    for _ in range(2):
        cfg = curve_cfg(region)
        learning_curve.run(cfg)
        out = paths.region_dir(cfg) / "learning_curve"
        outputs.append([(paths.plots_dir(cfg) / "learning_curve.csv").read_bytes(),
                        (out / "folds.csv").read_bytes(), (out / "learning_curve.png").read_bytes()])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("override, message", [
    ("learning_curve.sizes=[0,10]", "learning_curve.sizes: expected a list of whole numbers >= 1"),
    ("learning_curve.sizes=[abc]", "learning_curve.sizes takes a list of whole numbers"),
    ("learning_curve.sizes=[2.5]", "learning_curve.sizes takes a list of whole numbers"),
    ("learning_curve.folds=4", "learning_curve.folds: expected a whole number from 1 to cv.n_splits=3"),
])
def test_bad_settings_are_one_line_errors(region, capsys, override, message):
    args = synthetic.overrides(region, "tiny", *synthetic.FAST["extra_trees"], override)
    before = sorted(p.name for p in (region / "tiny").iterdir())
    assert main(["learning-curve", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (region / "tiny").iterdir()) == before

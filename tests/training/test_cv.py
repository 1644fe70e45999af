"""Cross-validation folds: stratified k-fold and spatial blocks."""

import numpy as np
import pytest

from helpers.project import REPO
from urbanmap.core import config
from urbanmap.core.errors import InputError
from urbanmap.training.cv import CvSettings, assign_folds, spatial_blocks


@pytest.fixture
def cells():
    """600 cells of 1 km scattered over 60 km x 40 km, labels correlated with position."""
    rng = np.random.default_rng(1)
    col = rng.integers(2770, 2830, 600)
    row = rng.integers(800, 840, 600)
    x, y = (col + 0.5) * 1000, (row + 0.5) * 1000
    label = ((x - 2800e3) ** 2 + (y - 820e3) ** 2 < 15e3**2).astype(np.uint8)
    return label, x, y


def test_kfold_is_stratified_and_a_partition(cells):
    y, x, yc = cells
    folds = assign_folds(y, x, yc, "kfold", 10, seed=42)
    assert sorted(np.unique(folds)) == list(range(10))
    for k in range(10):
        share = y[folds == k].mean()
        assert abs(share - y.mean()) < 0.02
    np.testing.assert_array_equal(folds, assign_folds(y, x, yc, "kfold", 10, seed=42))
    assert (folds != assign_folds(y, x, yc, "kfold", 10, seed=1)).any()


def test_spatial_folds_never_share_a_block(cells):
    y, x, yc = cells
    folds = assign_folds(y, x, yc, "spatial", 5, seed=42, block_size=10000)
    blocks = spatial_blocks(x, yc, 10000)
    for k in range(5):
        assert not set(blocks[folds == k]) & set(blocks[folds != k])
    # neighbours within a block are on the same side; blocks follow multiples of 10 km
    bx = np.floor(x / 10000)
    for b in np.unique(blocks):
        assert len(np.unique(folds[blocks == b])) == 1
        assert len(np.unique(bx[blocks == b])) == 1
    assert sorted(np.unique(folds)) == list(range(5))


def test_blocks_are_aligned_to_the_crs():
    ids = spatial_blocks(np.array([19999.0, 20001.0, 39999.0]), np.array([500.0, 500.0, 500.0]), 20000)
    assert ids[0] != ids[1] and ids[1] == ids[2]


def test_bad_fold_requests(cells):
    y, x, yc = cells
    with pytest.raises(InputError, match="cv.block_size: 8 blocks of 20000 m .* fewer than cv.n_splits=10"):
        assign_folds(y, x, yc, "spatial", 10, seed=0, block_size=20000)
    with pytest.raises(InputError, match="one class only"):
        assign_folds(np.ones(50, np.uint8), x[:50], yc[:50], "kfold", 5, seed=0)
    with pytest.raises(InputError, match="fewer than cv.n_splits=10 per class"):
        assign_folds(np.r_[np.zeros(20), np.ones(4)].astype(np.uint8), x[:24], yc[:24], "kfold", 10, seed=0)


def test_cv_settings_read_the_group():
    assert CvSettings.from_config(config.load(REPO)) == CvSettings("kfold", 10, True, None)
    assert CvSettings.from_config(config.load(REPO, ["cv=spatial"])) == CvSettings("spatial", 10, True, 20000)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["cv.name=random"], "cv.name: unknown scheme 'random' (kfold or spatial)"),
        (["cv.n_splits=1"], "cv.n_splits: must be at least 2, got 1"),
        (["cv=spatial", "cv.block_size=0"], "cv.block_size: must be a positive number of metres, got 0"),
    ],
)
def test_cv_settings_name_the_bad_key(overrides, message):
    with pytest.raises(InputError) as err:
        CvSettings.from_config(config.load(REPO, overrides))
    assert str(err.value) == message

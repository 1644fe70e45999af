"""Cross-validation folds: the pilot's stratified k-fold, or folds by spatial blocks.

``cv=kfold``: scikit-learn's StratifiedKFold (shuffled from the seed): each fold keeps the
class balance; neighbouring cells land on both sides of a split, which is the pilot's
protocol but flatters models that learn local texture.

``cv=spatial``: cells are grouped in square blocks of ``cv.block_size`` metres aligned to
multiples of the block size in the grid's CRS (like the cells themselves, so a block id
is the same in every region), and scikit-learn's StratifiedGroupKFold assigns whole
blocks to folds, keeping the class balance as far as blocks allow. No block, hence no
pair of neighbours closer than the block edge, is on both sides of a split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from omegaconf import DictConfig

from urbanmap.core.errors import InputError

SCHEMES = ("kfold", "spatial")


def spatial_blocks(x: ArrayLike, y: ArrayLike, block_size: float | None) -> np.ndarray:
    """(n,) int64 block id of points x, y (metres, grid CRS) in blocks of `block_size` m."""
    if not block_size or block_size <= 0:
        raise InputError(f"cv.block_size: must be a positive number of metres, got {block_size}")
    bx = np.floor(np.asarray(x) / block_size).astype(np.int64)
    by = np.floor(np.asarray(y) / block_size).astype(np.int64)
    # a unique integer per (bx, by): pairs mapped through np.unique, no hashing of tuples
    _, ids = np.unique(np.stack([bx, by], axis=1), axis=0, return_inverse=True)
    return ids.ravel().astype(np.int64)


def check_classes(y: ArrayLike, n_splits: int, context: str) -> None:
    """InputError unless both classes are present with at least `n_splits` samples each."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=2)
    if (counts == 0).any():
        only = "urban" if counts[1] else "non_urban"
        raise InputError(f"{context}: one class only ({only}); training needs urban and non_urban cells")
    if n_splits < 2:
        raise InputError(f"cv.n_splits: must be at least 2, got {n_splits}")
    if counts.min() < n_splits:
        raise InputError(
            f"{context}: {counts[1]} urban and {counts[0]} non_urban cells are fewer than "
            f"cv.n_splits={n_splits} per class"
        )


def assign_folds(
    y: ArrayLike,
    x: ArrayLike,
    yc: ArrayLike,
    scheme: str,
    n_splits: int,
    seed: int,
    shuffle: bool = True,
    block_size: float | None = None,
    context: str = "patches",
) -> np.ndarray:
    """The test fold (0..n_splits-1) of every sample.

    Args:
        y: (n,) class labels (0/1).
        x, yc: (n,) cell centres, metres in the grid's CRS (used by `spatial`).
        scheme: "kfold" (StratifiedKFold) or "spatial" (StratifiedGroupKFold on blocks).
    Returns:
        (n,) int64 fold of each sample.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    check_classes(y, n_splits, context)
    folds = np.full(len(y), -1, np.int64)
    if scheme == "kfold":
        splitter = StratifiedKFold(n_splits, shuffle=shuffle, random_state=seed if shuffle else None)
        splits = splitter.split(np.zeros(len(y)), y)
    elif scheme == "spatial":
        groups = spatial_blocks(x, yc, block_size)
        n_blocks = int(groups.max()) + 1
        if n_blocks < n_splits:
            raise InputError(
                f"cv.block_size: {n_blocks} blocks of {block_size:g} m hold the sampled cells, "
                f"fewer than cv.n_splits={n_splits}; use smaller blocks or fewer folds"
            )
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y, groups)
    else:
        raise InputError(f"cv.name: unknown scheme {scheme!r} (kfold or spatial)")
    for k, (_, test) in enumerate(splits):
        folds[test] = k
    return folds


@dataclass(frozen=True)
class CvSettings:
    """The `cv` config group, checked.

    Attributes:
        name: the scheme, "kfold" (stratified k-fold, the pilot's) or "spatial" (blocks).
        n_splits: folds (>= 2).
        shuffle: kfold only: shuffle before splitting (from the seed); spatial always does.
        block_size: spatial only: block side, metres in the grid's CRS (> 0); None for kfold.
        repeats: how many times the whole split is drawn (>= 1), repeat r from seed + r
            (repeated CV, e.g. 10 x 10-fold, for the corrected resampled t-test).
    """

    name: str
    n_splits: int
    shuffle: bool = True
    block_size: float | None = None
    repeats: int = 1

    @classmethod
    def from_config(cls, cfg: DictConfig) -> CvSettings:
        """Read `cfg.cv`; InputError naming the key that is wrong."""
        cv = cfg.cv
        name = str(cv.name)
        if name not in SCHEMES:
            raise InputError(f"cv.name: unknown scheme {name!r} (kfold or spatial)")
        n_splits = int(cv.n_splits)
        if n_splits < 2:
            raise InputError(f"cv.n_splits: must be at least 2, got {n_splits}")
        block_size = cv.get("block_size")
        if name == "spatial" and (not block_size or block_size <= 0):
            raise InputError(f"cv.block_size: must be a positive number of metres, got {block_size}")
        repeats = cv.get("repeats", 1)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise InputError(f"cv.repeats: expected a whole number >= 1, got {repeats!r}")
        if repeats > 1 and name == "kfold" and not cv.get("shuffle", True):
            raise InputError("cv.repeats: repeats of an unshuffled k-fold split are all the same split; set cv.shuffle=true")
        return cls(name, n_splits, bool(cv.get("shuffle", True)), block_size, repeats)

    def folds(self, y: ArrayLike, x: ArrayLike, yc: ArrayLike, seed: int, context: str = "patches") -> np.ndarray:
        """assign_folds with these settings: (n,) int64 test fold of each sample."""
        return assign_folds(
            y, x, yc, self.name, self.n_splits, int(seed), shuffle=self.shuffle, block_size=self.block_size,
            context=context,
        )

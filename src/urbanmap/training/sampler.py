"""The balanced sample of labelled cells: ``n`` valid cells of each class, at random.

``n = min(patches.n_per_class, cells of the rarer class)`` cells of each class are drawn
at random from the seed (a warning says when the cap applies). Cells whose patch holds
nodata (NaN or the file's nodata value, in any band) are dropped, counted, and replaced
by the next cells of the same random order, so both classes keep ``n`` patches unless
the region runs out of valid cells (then both shrink to the smaller count, again with a
warning).

`balanced_sample` is the pure core: it takes the cells' labels and a function that cuts
patches, so the same draw serves the in-memory `extract` (tests, benchmarks) and the
tiled patches stage (patches.py), cell for cell.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice
from urbanmap.training.patchset import CLASSES, PatchSet, check_mosaic, check_reflectance, read_patches, valid_patches

if TYPE_CHECKING:  # pandas only in annotations: a Dask worker cutting tiles never imports it
    import pandas as pd

log = logging.getLogger(__name__)

#: Cuts the patches of cells: (k,) int positions -> ((k, b, p, p) float32 patches, (k,) bool valid).
Reader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Kept:
    """What the rounds of cutting have kept so far, per class (0 non_urban, 1 urban).

    Attributes:
        index: per class, arrays of kept positions (into the labels), in random order.
        patches: per class, the kept (k, b, p, p) patches, parallel to `index`.
        have: valid cells kept per class.
        pos: cells of each class's random order used so far (kept or dropped).
        dropped: invalid cells cut before a class's n-th valid one (both classes).
    """

    index: list[list[np.ndarray]] = field(default_factory=lambda: [[], []])
    patches: list[list[np.ndarray]] = field(default_factory=lambda: [[], []])
    have: list[int] = field(default_factory=lambda: [0, 0])
    pos: list[int] = field(default_factory=lambda: [0, 0])
    dropped: int = 0


def class_orders(label: np.ndarray, n_per_class: int, rng: np.random.Generator,
                 context: str = "patches") -> tuple[list[np.ndarray], int]:
    """Each class's cells in a random order (non_urban first, from `rng`), and the cells
    wanted per class, `n_per_class` capped to the rarer class (with a warning).

    Args:
        label: (m,) str array of labelled cells: "urban", "non_urban" (others ignored).
    Returns:
        ([non_urban positions, urban positions] into `label`, n).
    """
    queues = [rng.permutation(np.flatnonzero(label == c)) for c in CLASSES]
    available = [len(q) for q in queues]
    if min(available) == 0:
        missing = " or ".join(c for c, a in zip(CLASSES, available) if not a)
        raise InputError(f"{context}: no cell labelled {missing}; training needs urban and non_urban cells")
    n = min(int(n_per_class), *available)
    if n < n_per_class:
        log.warning(
            f"{context}: patches.n_per_class={n_per_class} capped to {n}: the region has "
            f"{available[1]:,} urban and {available[0]:,} non_urban labelled cells"
        )
    return queues, n


def cut_valid(queues: Sequence[np.ndarray], n: int, read: Reader) -> Kept:
    """Cut cells of each class's order, in rounds, until `n` valid ones of each (or the
    order ends).

    The first round cuts `n` of each class; each later round cuts the remaining shortfall
    scaled up by the share of invalid patches seen so far, so that a region with much
    nodata (a mosaic that scenes do not cover whole) needs two or three rounds, not one
    per replacement of a replacement: every round is a pass of tasks over the tiles.
    Cells cut beyond a class's n-th valid one are left out, so the sample does not depend
    on the rounds.
    """
    kept = Kept()
    have, pos = kept.have, kept.pos
    while True:
        # The shortfall, times the cells cut per valid patch so far and 1.25, so that one
        # more round usually completes the class.
        want = [math.ceil((n - have[c]) * 1.25 * pos[c] / max(have[c], 1)) if pos[c] else n for c in (0, 1)]
        take = [q[pos[c] : pos[c] + want[c]] if have[c] < n else q[:0] for c, q in enumerate(queues)]
        if not sum(len(t) for t in take):
            return kept
        batch = np.concatenate(take)
        patches, ok = read(batch)
        cls = np.repeat([0, 1], [len(t) for t in take])
        for c in (0, 1):
            at = np.flatnonzero(cls == c)
            valid = at[ok[at]][: n - have[c]]
            # The cells this class used: up to its n-th valid one, or all it cut.
            used = int(np.searchsorted(at, valid[-1])) + 1 if len(valid) and have[c] + len(valid) == n else len(at)
            kept.dropped += used - len(valid)
            kept.index[c].append(batch[valid])
            kept.patches[c].append(patches[valid])
            have[c] += len(valid)
            pos[c] += used


def shuffled_sample(kept: Kept, n: int, rng: np.random.Generator,
                    context: str = "patches") -> tuple[np.ndarray, np.ndarray, int]:
    """The first `n_valid = min(valid kept per class)` cells of each class, classes
    interleaved by one permutation from `rng` (a warning when n_valid < n); InputError
    when a class has no valid patch. Returns (index (2 n_valid,), patches, dropped)."""
    have = kept.have
    n_valid = min(have)
    if n_valid < n:
        log.warning(
            f"{context}: only {have[1]:,} urban and {have[0]:,} non_urban cells have a patch "
            f"without nodata; taking {n_valid:,} of each"
        )
    if n_valid == 0:
        raise InputError(f"{context}: no valid patch for one class ({kept.dropped:,} patches with nodata)")
    index = np.concatenate([np.concatenate(kept.index[c])[:n_valid] for c in (0, 1)])
    patches = np.concatenate([np.concatenate(kept.patches[c])[:n_valid] for c in (0, 1)])
    shuffle = rng.permutation(len(index))
    return index[shuffle], patches[shuffle], kept.dropped


def balanced_sample(label: np.ndarray, n_per_class: int, seed: int, read: Reader,
                    context: str = "patches") -> tuple[np.ndarray, np.ndarray, int]:
    """Draw `n` valid cells of each class at random, replacing cells whose patch is invalid.

    Each class's cells are put in a random order (`class_orders`); the sample is the first
    `n` cells of each order whose patch is valid (no nodata), and `nodata_dropped` counts
    the invalid ones before them. Cells are cut in rounds (`cut_valid`), then shuffled
    (`shuffled_sample`); one generator from `seed` draws the orders and the shuffle.

    Args:
        label: (m,) str array of labelled cells: "urban", "non_urban" (others ignored).
        n_per_class: wanted cells per class.
        seed: seed of the random order.
        read: function (k,) int index array -> ((k, b, p, p) patches, (k,) bool valid).
    Returns:
        (index (2n,) into `label`, patches (2n, b, p, p), nodata_dropped), in random order.
    """
    rng = np.random.default_rng(seed)
    queues, n = class_orders(label, n_per_class, rng, context)
    kept = cut_valid(queues, n, read)
    return shuffled_sample(kept, n, rng, context)


def extract(labels: pd.DataFrame, lattice: PixelLattice, src: Any, bands: Sequence[str], n_per_class: int, seed: int,
            year: int, name: str = "mosaic") -> PatchSet:
    """The balanced PatchSet of a region from its labels and an open mosaic, in memory.

    Args:
        labels: one row per grid cell with `col`, `row`, `cell_id`, `label`.
        lattice: the region's pixel lattice (all grid cells).
        src: open rasterio dataset of the mosaic (checked against `lattice`).
        bands: band names to cut, in order.
    """
    indexes = check_mosaic(src, lattice, name, bands)
    check_reflectance(src, name, indexes)
    cols, rows = labels["col"].to_numpy(), labels["row"].to_numpy()
    nodata = src.nodata

    def read(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        patches = read_patches(src, lattice, cols[index], rows[index], indexes)
        return patches, valid_patches(patches, nodata)

    index, patches, dropped = balanced_sample(labels["label"].to_numpy(str), n_per_class, seed, read)
    return selection(labels, index, patches, lattice, year, bands, dropped)


def selection(labels: pd.DataFrame, index: np.ndarray, patches: np.ndarray, lattice: PixelLattice, year: int,
              bands: Sequence[str], dropped: int) -> PatchSet:
    """The PatchSet of the sampled rows `index` of `labels` (cell_id, col, row, label) and
    their (k, b, p, p) patches; x, y are the cells' centres in the lattice CRS (m)."""
    sel = labels.iloc[index]
    cols, rows, s = sel["col"].to_numpy(), sel["row"].to_numpy(), lattice.cell_size
    return PatchSet(
        patches=patches,
        label=(sel["label"].to_numpy(str) == "urban").astype(np.uint8),
        cell_id=sel["cell_id"].to_numpy(str),
        col=cols.astype(np.int64),
        row=rows.astype(np.int64),
        x=(cols + 0.5) * s,
        y=(rows + 0.5) * s,
        year=int(year),
        bands=tuple(bands),
        crs=lattice.crs.to_string(),
        cell_size=s,
        nodata_dropped=dropped,
    )

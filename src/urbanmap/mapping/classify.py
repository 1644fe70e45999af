"""The final model on a set of cells of an open mosaic: the units of work of `predict`.

`predict_cells` (an open mosaic and any set of cells, e.g. a tile, in; their p_urban out,
block by block; predict_tiles.py runs one per tile), `predict_block` (one windowed read)
and `classify`, the pure core (patches -> p_urban).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from rasterio.io import DatasetReader
from tqdm import tqdm

from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, group_cells
from urbanmap.training.models import PatchClassifier
from urbanmap.training.patchset import read_patches, valid_patches

#: Map classes; p_urban NaN is `nodata`.
CLASSES = ("urban", "non_urban", "nodata")


def classify(clf: PatchClassifier, patches: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """p_urban of patches; NaN for patches holding nodata.

    Args:
        clf: a fitted PatchClassifier (models.load).
        patches: (k, b, p, p) float32 reflectance, bands in the model's order.
        nodata: the mosaic's nodata value besides NaN, or None.
    Returns:
        (k,) float32 probability of urban, NaN where a patch holds nodata.
    """
    ok = valid_patches(patches, nodata)
    p = np.full(len(patches), np.nan, np.float32)
    if ok.any():
        p[ok] = clf.predict_proba(patches[ok] if not ok.all() else patches)
    return p


def predict_block(clf: PatchClassifier, src: DatasetReader, lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike,
                  indexes: Sequence[int]) -> np.ndarray:
    """p_urban of a block of cells: one windowed read of the mosaic (the window bounding
    the cells), their patches cut as the `patches` stage cuts them, then `classify`.

    Args:
        src: an open rasterio dataset on `lattice` (patchset.check_mosaic).
        cols, rows: (k,) lattice indices of the cells (any set; memory ~ their bounding box).
        indexes: 1-based band indexes of the model's bands, in its order.
    Returns:
        (k,) float32 p_urban, NaN for cells whose patch holds nodata.
    """
    whole = lattice.ncols + lattice.nrows  # one block larger than the region: a single read
    patches = read_patches(src, lattice, cols, rows, indexes, block_cells=whole)
    return classify(clf, patches, src.nodata)


def predict_cells(clf: PatchClassifier, src: DatasetReader, lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike,
                  indexes: Sequence[int], block_cells: int, progress: bool = True) -> np.ndarray:
    """p_urban (n,) float32 of cells (lattice indices), block by block with a progress bar.

    Args:
        clf: a fitted PatchClassifier; src: an open mosaic on `lattice`.
        cols, rows: (n,) lattice indices of the cells, in any order.
        indexes: 1-based band indexes of the model's bands, in its order.
        block_cells: cells per side of the square blocks read at once (`predict_block`).
        progress: show a progress bar.
    Returns:
        (n,) float32 p_urban in the order of `cols`, NaN for cells whose patch holds nodata.
    """
    cols, rows = np.asarray(cols), np.asarray(rows)
    p = np.full(len(cols), np.nan, np.float32)
    groups = group_cells(lattice, cols, rows, block_cells)
    for members in tqdm(groups, desc="predict", unit="block", disable=not progress or None):
        p[members] = predict_block(clf, src, lattice, cols[members], rows[members], indexes)
    return p


def classes(p_urban: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) str class of each p_urban: urban (>= threshold), non_urban, nodata (NaN)."""
    return np.where(np.isnan(p_urban), "nodata", np.where(p_urban >= threshold, "urban", "non_urban"))


def check_model(card: dict[str, Any], card_name: str, src: DatasetReader, cell_size: float, mosaic_name: str) -> None:
    """InputError unless the model was trained on the mosaic's bands and pixel size.

    Compares the model card (`bands`, `patch_size`, `cell_size`) with the mosaic's band
    descriptions and its pixels per cell (cell_size / the mosaic's pixel width).
    """
    bands = list(card.get("bands") or [])
    have = [d or "" for d in src.descriptions]
    missing = [b for b in bands if b not in have]
    if not bands or missing:
        raise InputError(
            f"{card_name}: model trained on bands {', '.join(bands) or '(none)'}; {mosaic_name} has bands "
            f"{', '.join(have)} (missing: {', '.join(missing) or 'all'})"
        )
    pixel = abs(src.transform.a)
    mosaic_patch = cell_size / pixel
    trained = int(card.get("patch_size", 0))
    if float(card.get("cell_size", cell_size)) != float(cell_size) or abs(mosaic_patch - trained) > 1e-6:
        raise InputError(
            f"{card_name}: model trained on {trained} x {trained} px patches of "
            f"{float(card.get('cell_size', 0)):g} m cells; {mosaic_name} has {pixel:.4f} m pixels, "
            f"{mosaic_patch:.4g} px per {cell_size:g} m cell"
        )

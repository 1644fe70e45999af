"""A tiny labelled region and its mosaic, for tests, benchmarks and trying a stage in
seconds: a square grid of 1 km cells (EPSG:6372) with a round city, and a 6-band
float32 mosaic on its 33 x 33 px pixel lattice drawn from three end-member spectra,
written with the real formats (GeoParquet cell table, tiled float32 GeoTIFF with band
descriptions and NaN nodata), so the patches, train, evaluate and predict stages run on
it unchanged. Everything follows from the seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from affine import Affine

from urbanmap.core import io
from urbanmap.core.lattice import PixelLattice
from urbanmap.imagery.landsat import BANDS

CRS = "EPSG:6372"
CELL = 1000.0
PATCH = 33

#: End-member reflectances (blue .. swir2) of the synthetic scene.
URBAN = np.array([0.10, 0.11, 0.12, 0.20, 0.24, 0.21], np.float32)
VEGETATION = np.array([0.03, 0.06, 0.04, 0.35, 0.20, 0.10], np.float32)
SOIL = np.array([0.08, 0.11, 0.15, 0.22, 0.30, 0.26], np.float32)


def labelled_cells(ncols: int = 16, nrows: int = 16, col0: int = 2790, row0: int = 820, seed: int = 0) -> pd.DataFrame:
    """A square grid with a round city: urban inside radius 0.3 of the side, excluded in a
    ring, non_urban outside. Columns cell_id, col, row, label, urban_fraction."""
    rng = np.random.default_rng(seed)
    grid_c, grid_r = np.meshgrid(np.arange(ncols), np.arange(nrows))
    cc, rr = grid_c.ravel(), grid_r.ravel()
    d = np.hypot(cc - (ncols - 1) / 2, rr - (nrows - 1) / 2) / max(ncols, nrows)
    label = np.where(d < 0.3, "urban", np.where(d < 0.36, "excluded", "non_urban"))
    frac = np.where(label == "urban", rng.uniform(0.5, 1, d.size), np.where(label == "excluded", 0.3, rng.uniform(0, 0.1, d.size)))
    cols, rows = cc + col0, rr + row0
    return pd.DataFrame(
        {
            "cell_id": [f"E{c:04d}N{r:04d}" for c, r in zip(cols, rows)],
            "col": cols.astype(np.int64),
            "row": rows.astype(np.int64),
            "label": label,
            "urban_fraction": frac,
        }
    )


def write_labels(path: Path, cells: pd.DataFrame) -> None:
    """Write the cells as a labels.parquet (io.write_cells, 1 km cells, EPSG:6372)."""
    io.write_cells(path, cells, CELL, CRS)


def lattice_of(cells: pd.DataFrame) -> PixelLattice:
    """The cells' pixel lattice (33 x 33 px per cell)."""
    return PixelLattice.from_cells(cells["col"], cells["row"], CELL, PATCH, CRS)


def scene(cells: pd.DataFrame, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """(6, height, width) float32 reflectance on the cells' lattice: each pixel is urban
    with probability equal to its cell's urban_fraction, else vegetation or soil, plus
    Gaussian noise."""
    lat = lattice_of(cells)
    rng = np.random.default_rng(seed)
    frac = np.full((lat.nrows, lat.ncols), 0.0, np.float32)
    row_off, col_off = lat.cell_offsets(cells["col"], cells["row"])
    frac[row_off // PATCH, col_off // PATCH] = cells["urban_fraction"].to_numpy()
    frac_px = np.kron(frac, np.ones((PATCH, PATCH), np.float32))
    u = rng.random(frac_px.shape) < frac_px
    veg = rng.random(frac_px.shape) < 0.5
    img = np.where(u, URBAN[:, None, None], np.where(veg, VEGETATION[:, None, None], SOIL[:, None, None]))
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return img.astype(np.float32)


def write_mosaic(path: Path, cells: pd.DataFrame, image: np.ndarray | None = None, crs: str = CRS,
                 transform: Affine | None = None, extra_bands: bool = False, seed: int = 0) -> np.ndarray:
    """Write `image` (default: `scene(cells)`) as a tiled float32 GeoTIFF on the cells'
    lattice (or the given crs/transform); return the array written."""
    lat = lattice_of(cells)
    img = scene(cells, seed) if image is None else image
    names = list(BANDS)
    if extra_bands:
        img = np.concatenate([img, np.ones((4, *img.shape[1:]), np.float32)])
        names += ["smad", "emad", "bcmad", "count"]
    profile = dict(
        driver="GTiff", width=img.shape[2], height=img.shape[1], count=img.shape[0], dtype="float32",
        crs=crs, transform=transform or lat.transform, nodata=np.nan, tiled=True, blockxsize=256,
        blockysize=256, compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
        dst.descriptions = tuple(names)
    return img


def make_region(root: Path, name: str = "tiny", ncols: int = 20, nrows: int = 20, year: int = 2010,
                seed: int = 0, **mosaic_kwargs: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """Write `root/name/labels.parquet` and `root/name/mosaic_<year>.tif`; return the
    cells and the image written."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    cells = labelled_cells(ncols, nrows, seed=seed)
    write_labels(folder / "labels.parquet", cells)
    img = write_mosaic(folder / f"mosaic_{year}.tif", cells, seed=seed, **mosaic_kwargs)
    return cells, img


def write_validation_inputs(root: Path, n_side: int = 20, name: str = "tiny", target: str = "2019",
                            train: str = "2010") -> pd.DataFrame:
    """What the validation steps and the interpreters' web app read, under `root/name/`:
    grid.parquet, predictions/<period>.parquet of the periods `target` and `train` (10% of
    cells mapped wrongly, the first 5 nodata), truth/<target>/cells.parquet,
    change/change.parquet and the mosaics of both periods. Returns the cells with `truth`, their true class of `target`."""
    folder = Path(root) / name
    folder.mkdir(parents=True)
    cells = labelled_cells(n_side, n_side, seed=1)
    rng = np.random.default_rng(0)
    ids = cells[["cell_id", "col", "row"]]
    io.write_cells(folder / "grid.parquet", ids, CELL, CRS)
    truth = np.where(cells["label"] == "non_urban", "non_urban", "urban")
    wrong = rng.random(len(cells)) < 0.1
    mapped = np.where(wrong, np.where(truth == "urban", "non_urban", "urban"), truth).astype(object)
    mapped[:5] = "nodata"
    io.write_cells(folder / "predictions" / f"{target}.parquet",
                   ids.assign(p_urban=np.where(mapped == "urban", 0.8, 0.2).astype(np.float32), **{"class": mapped}), CELL, CRS)
    (folder / "truth" / str(target)).mkdir(parents=True)
    io.write_cells(folder / "truth" / str(target) / "cells.parquet", ids.assign(true_class=truth), CELL, CRS)
    before = np.where(rng.random(len(cells)) < 0.2, "non_urban", mapped).astype(object)
    before[:5] = "nodata"
    io.write_cells(folder / "predictions" / f"{train}.parquet",
                   ids.assign(p_urban=np.where(before == "urban", 0.8, 0.2).astype(np.float32), **{"class": before}), CELL, CRS)
    change = np.select([(mapped == "nodata") | (before == "nodata"), (before == "urban") & (mapped == "urban"),
                        (before == "non_urban") & (mapped == "urban"), (before == "urban") & (mapped == "non_urban")],
                       ["nodata", "stable_urban", "new_urban", "urban_lost"], "stable_non_urban")
    io.write_cells(folder / "change" / "change.parquet",
                   ids.assign(**{f"class_{train}": before, f"class_{target}": mapped, "change": change}), CELL, CRS)
    write_mosaic(folder / f"mosaic_{target}.tif", cells, extra_bands=True)
    write_mosaic(folder / f"mosaic_{train}.tif", cells, extra_bands=True, seed=1)
    return cells.assign(truth=truth)

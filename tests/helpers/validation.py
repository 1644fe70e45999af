"""A small region with everything the validation steps and the web app read: grid,
predictions of 2010 and 2019 (a few nodata), the 2019 truth, change classes and the
mosaics of both years, on the tiny region of urbanmap.examples.tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from urbanmap.core import io
from urbanmap.examples.tiny import CELL, CRS, labelled_cells, write_mosaic


def validation_region(root: Path, n_side: int = 20, name: str = "tiny") -> tuple[list[str], pd.DataFrame]:
    """Write the region `root/name/`; returns (overrides for it, its cells with `truth`,
    the true class of 2019)."""
    folder = root / name
    folder.mkdir(parents=True)
    cells = labelled_cells(n_side, n_side, seed=1)
    rng = np.random.default_rng(0)
    io.write_cells(folder / "grid.parquet", cells[["cell_id", "col", "row"]], CELL, CRS)
    truth = np.where(cells["label"] == "non_urban", "non_urban", "urban")
    wrong = rng.random(len(cells)) < 0.1
    mapped = np.where(wrong, np.where(truth == "urban", "non_urban", "urban"), truth).astype(object)
    mapped[:5] = "nodata"
    pred = cells[["cell_id", "col", "row"]].assign(p_urban=np.where(mapped == "urban", 0.8, 0.2).astype(np.float32), **{"class": mapped})
    io.write_cells(folder / "predictions_2019.parquet", pred, CELL, CRS)
    (folder / "truth" / "2019").mkdir(parents=True)
    io.write_cells(folder / "truth" / "2019" / "cells.parquet", cells[["cell_id", "col", "row"]].assign(true_class=truth), CELL, CRS)
    before = np.where(rng.random(len(cells)) < 0.2, "non_urban", mapped).astype(object)
    before[:5] = "nodata"
    io.write_cells(folder / "predictions_2010.parquet", cells[["cell_id", "col", "row"]].assign(
        p_urban=np.where(before == "urban", 0.8, 0.2).astype(np.float32), **{"class": before}), CELL, CRS)
    change = np.select([(mapped == "nodata") | (before == "nodata"), (before == "urban") & (mapped == "urban"),
                        (before == "non_urban") & (mapped == "urban"), (before == "urban") & (mapped == "non_urban")],
                       ["nodata", "stable_urban", "new_urban", "urban_lost"], "stable_non_urban")
    io.write_cells(folder / "change" / "change.parquet",
                   cells[["cell_id", "col", "row"]].assign(class_2010=before, class_2019=mapped, change=change), CELL, CRS)
    write_mosaic(folder / "mosaic_2019.tif", cells, extra_bands=True)
    write_mosaic(folder / "mosaic_2010.tif", cells, extra_bands=True, seed=1)
    over = [f"out_dir={root}", f"data.name={name}", "validation.target_se=0.04", "validation.min_per_stratum=10"]
    return over, cells.assign(truth=truth)

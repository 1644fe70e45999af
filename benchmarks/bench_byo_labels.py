"""Benchmark: labels from a 10,000 x 10,000 land-cover raster into 300 m cells.

    python benchmarks/bench_byo_labels.py [--size 10000] [--sample 300] [--crs EPSG:4326]

Writes a categorical land-cover GeoTIFF of size x size pixels (uint8, WorldCover codes,
tiled, deflate) to a temp directory: by default in lon/lat (EPSG:4326, 0.0001° pixels,
about 74 km x 111 km at 48° N, as ESA WorldCover is distributed); with `--crs
EPSG:32633`, in the grid's CRS at 10 m. The grid is the 300 m cells of WGS 84 / UTM 33N
over the raster's extent. Then times, in this process:

  stage     the `labels` stage (urbanmap.census.labels.run with data.landcover): read the grid,
            the urban fraction of every cell by area (landcover.landcover_areas), the label rule,
            GeoParquet + JSON written
  core      landcover.landcover_areas alone
  baseline  the naive way, one rasterio.mask.mask per cell polygon (projected to the
            raster's CRS, pixel centres inside), on a random sample of cells,
            extrapolated to every cell

and prints seconds, cells, megapixels per second, baseline / stage, the mean |difference|
of urban fraction between the two on the sample, and the peak RSS. Timings are noisy on
a shared machine: run it twice.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRID_CRS = "EPSG:32633"
CELL = 300.0


def write_landcover(path: Path, size: int, crs: str) -> tuple:
    """A land-cover map of size x size pixels: 120 m patches of the classes, built-up in
    a few large towns, 10% speckle. Returns the raster's bounds in GRID_CRS."""
    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds

    rng = np.random.default_rng(8)
    coarse = max(1, size // 12)
    patches = rng.choice(np.array([10, 30, 40, 60, 80], np.uint8), size=(coarse, coarse), p=[0.3, 0.2, 0.4, 0.05, 0.05])
    yy, xx = np.mgrid[0:coarse, 0:coarse] / coarse
    town = np.zeros((coarse, coarse), bool)
    for cy, cx, r in rng.uniform([0.1, 0.1, 0.03], [0.9, 0.9, 0.12], (12, 3)):
        town |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    patches[town & (rng.random(town.shape) < 0.8)] = 50
    if crs == GRID_CRS:
        transform = Affine(10.0, 0, 560_000.0, 0, -10.0, 5_380_000.0)
    else:
        transform = Affine(1e-4, 0, 15.9, 0, -1e-4, 48.7)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "crs": crs,
               "transform": transform, "nodata": 0, "tiled": True, "blockxsize": 512, "blockysize": 512,
               "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        step = 1024
        for r0 in range(0, size, step):  # by strips, to keep memory low
            rows = np.arange(r0, min(size, r0 + step))
            strip = patches[np.minimum(rows // 12, coarse - 1)][:, np.minimum(np.arange(size) // 12, coarse - 1)]
            speckle = rng.random(strip.shape) < 0.1
            strip[speckle] = rng.choice(np.array([10, 30, 40, 50], np.uint8), size=int(speckle.sum()))
            dst.write(strip[None], window=rasterio.windows.Window(0, r0, size, len(rows)))
        bounds = dst.bounds
    return transform_bounds(crs, GRID_CRS, *bounds, densify_pts=21)


def baseline(src, cols, rows, urban_codes) -> tuple[np.ndarray, float]:
    """Urban fraction per cell with one rasterio.mask.mask call per cell; (fractions, s)."""
    import shapely
    from pyproj import Transformer
    from rasterio.mask import mask

    to_src = Transformer.from_crs(GRID_CRS, src.crs, always_xy=True)
    boxes = shapely.box(cols * CELL, rows * CELL, (cols + 1) * CELL, (rows + 1) * CELL)
    boxes = shapely.transform(shapely.segmentize(boxes, CELL / 4), lambda xy: np.column_stack(to_src.transform(xy[:, 0], xy[:, 1])))
    out = np.full(len(cols), np.nan)
    start = time.perf_counter()
    for i, box in enumerate(boxes):  # the per-cell Python loop this benchmark measures
        try:
            data, _ = mask(src, [box], crop=True, filled=False)
        except ValueError:  # a cell of the grid's corner outside the rotated raster
            continue
        valid = ~np.ma.getmaskarray(data) & (data.data != 0)
        if valid.any():
            out[i] = np.isin(data.data[valid], urban_codes).mean()
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--crs", default="EPSG:4326")
    args = parser.parse_args(argv)
    import rasterio

    from urbanmap.census import grid, labels, landcover
    from urbanmap.core import config, io, paths

    with tempfile.TemporaryDirectory(prefix="bench_byo_") as tmp:
        tmp = Path(tmp)
        lc = tmp / "landcover.tif"
        t0 = time.perf_counter()
        x0, y0, x1, y1 = write_landcover(lc, args.size, args.crs)
        print(f"land cover: {args.size:,} x {args.size:,} px in {args.crs} written in {time.perf_counter() - t0:.1f} s")
        window = [np.ceil(x0 / CELL) * CELL, np.ceil(y0 / CELL) * CELL, np.floor(x1 / CELL) * CELL, np.floor(y1 / CELL) * CELL]
        cfg = config.load(ROOT, [
            "data=byo_example", f"out_dir={tmp}", "data.boundary=null", f"data.window=[{','.join(f'{v:.0f}' for v in window)}]",
            f"data.landcover.path={lc}", "data.imagery.source=stac",
        ])
        grid.run(cfg)
        cells, cell_size, crs = io.read_cells(paths.grid(cfg), "grid", columns=["cell_id"])
        n = len(cells)

        start = time.perf_counter()
        summary = labels.run(cfg)
        stage_s = time.perf_counter() - start

        with rasterio.open(lc) as src:
            start = time.perf_counter()
            urban, valid, k = landcover.landcover_areas(src, cells["col"], cells["row"], CELL, crs, [50],
                                                            threads=int(cfg.compute.threads), progress=False)
            core_s = time.perf_counter() - start
            pick = np.random.default_rng(0).choice(n, size=min(args.sample, n), replace=False)
            naive, naive_s = baseline(src, cells["col"].to_numpy()[pick], cells["row"].to_numpy()[pick], [50])
        with np.errstate(invalid="ignore", divide="ignore"):
            ours = urban[pick] / valid[pick]
        naive_total = naive_s / len(pick) * n
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        figures = {
            "raster_px": args.size**2, "raster_crs": args.crs, "cells": n, "subpixels_per_cell_side": k,
            "stage_s": round(stage_s, 2), "core_s": round(core_s, 2),
            "core_mpx_per_s": round(args.size**2 / 1e6 / core_s, 1),
            "baseline_sample_cells": len(pick), "baseline_sample_s": round(naive_s, 2),
            "baseline_extrapolated_s": round(naive_total, 1), "baseline_over_stage": round(naive_total / stage_s, 1),
            "mean_abs_fraction_diff_vs_baseline": round(float(np.nanmean(np.abs(ours - naive))), 4),
            "labels": {k_: summary[k_] for k_ in ("urban_cells", "non_urban_cells", "excluded_cells")},
            "peak_rss_mb": round(rss),
        }
        print(json.dumps(figures, indent=2))
        print(f"labels stage: {n:,} cells of 300 m from {args.size**2 / 1e6:.0f} Mpx in {stage_s:.1f} s "
              f"(target <= 20 s); core {core_s:.1f} s; per-cell rasterio.mask baseline ~{naive_total:.0f} s "
              f"(extrapolated from {len(pick)} cells) = {naive_total / stage_s:.0f}x slower")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the national grid and labels stages against a brute-force baseline.

    make bench            # or: python benchmarks/bench_grid_labels.py [data=mexico]

Each step runs in its own process so that its peak memory (max RSS) is its own:
  grid       the `grid` stage for the region: read boundary, build cells, write GeoParquet
  grid-core  build_grid alone (boundary already projected, nothing written)
  baseline   brute force: shapely boxes for every cell of the bounding box, then
             intersects with the prepared boundary (what the grid replaces)
  labels     the `labels` stage: read grid and census, intersect, write GeoParquet
Prints seconds, peak RSS and the baseline / grid ratio. Outputs go to a temp directory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("grid", "grid-core", "baseline", "labels")


def _region(cfg):
    from urbanmap.census import grid
    from urbanmap.core import io

    settings = grid.GridSettings.from_config(cfg)
    boundary = io.read_vector(settings.boundary, "boundary")
    return grid.region_geometry(boundary, settings.window, settings.crs, str(settings.boundary))


def run_step(step: str, overrides: list[str]) -> dict:
    """Run one step in this process; return its figures."""
    import numpy as np
    import shapely

    from urbanmap.census import grid, labels
    from urbanmap.core import config

    cfg = config.load(ROOT, overrides)
    cell_size = grid.GridSettings.from_config(cfg).cell_size
    cells = None
    if step in ("grid-core", "baseline"):
        region = _region(cfg)
    start = time.perf_counter()
    if step == "grid":
        grid.run(cfg)
    elif step == "grid-core":
        cells = len(grid.build_grid(region, cell_size))
    elif step == "baseline":
        x0, y0, x1, y1 = region.bounds
        cols = np.arange(np.floor(x0 / cell_size), np.ceil(x1 / cell_size))
        rows = np.arange(np.floor(y0 / cell_size), np.ceil(y1 / cell_size))
        cc, rr = (a.ravel() for a in np.meshgrid(cols, rows))
        boxes = grid.cell_polygons(cc, rr, cell_size)
        shapely.prepare(region)
        cells = int(shapely.intersects(region, boxes).sum())
    elif step == "labels":
        labels.run(cfg)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": step, "seconds": seconds, "peak_mb": peak_mb, "cells": cells}


def main(overrides: list[str]) -> None:
    overrides = overrides or ["data=mexico"]
    with tempfile.TemporaryDirectory() as out:
        overrides = [*overrides, f"out_dir={out}"]
        results = {}
        for step in STEPS:
            proc = subprocess.run(
                [sys.executable, __file__, "--step", step, *overrides],
                cwd=ROOT, capture_output=True, text=True, check=True,
            )
            results[step] = json.loads(proc.stdout.strip().splitlines()[-1])
            if step in ("grid", "labels"):
                print(proc.stdout.strip().splitlines()[0])
    print(f"\n{'step':<10} {'seconds':>8} {'peak MB':>8} {'cells':>10}")
    for r in results.values():
        cells = f"{r['cells']:,}" if r["cells"] is not None else ""
        print(f"{r['step']:<10} {r['seconds']:8.2f} {r['peak_mb']:8.0f} {cells:>10}")
    base = results["baseline"]["seconds"]
    print(f"\nbaseline / grid stage: {base / results['grid']['seconds']:.1f}x")
    print(f"baseline / grid core:  {base / results['grid-core']['seconds']:.1f}x")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--step"]:
        print(json.dumps(run_step(args[1], args[2:])))
    else:
        main(args)

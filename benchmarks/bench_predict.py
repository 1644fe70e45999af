"""Benchmark: the `predict` stage over every cell of the default region, Extra Trees and LeNet.

    python benchmarks/bench_predict.py [--year 2019] [--repeats 3] [--lenet-epochs 3]
                                       [--lenet-model DIR] [--work /tmp/bench_predict]

Inputs are the default region's outputs in data/valle_de_mexico/ (grid.parquet,
mosaic_<year>.tif, the final Extra Trees model in model/, patches.npz); they are linked,
never written, into a work folder under /tmp. The LeNet is trained there on patches.npz
(`--lenet-epochs`, a few minutes at most) unless `--lenet-model` names a saved one.

For each model, measured in the same run:

  cli        `urbanmap predict period=<year>` in a fresh interpreter: imports, model load,
             the block loop, and writing the GeoParquet, COG, PNG and JSON (what
             `dvc repro` waits for);
  loop       `classify.predict_cells` alone: windowed reads of blocks of
             predict.block_cells^2 cells, patch cutting, nodata check, the model;
  bare       baseline: the model's `predict_proba` on the same cells' patches already in
             memory (read beforehand), i.e. inference alone.

The streamed loop's peak of Python-side memory (tracemalloc), at block_cells 8 and
predict.block_cells, is printed beside the size of all the region's patches. `loop` and `bare` are repeated (`--repeats`, alternating) and the best kept, as other
processes on the machine make single timings noisy. Printed: seconds, cells/s, the
ratios loop / bare and cli / bare, and the extrapolation of each rate to Mexico's
1,960,862 cells (linear in cells: the loop holds one block at a time). Target: cli <= 60 s
for the region's 3,600 cells with either model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from timing import best_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REGION = "valle_de_mexico"
MEXICO_CELLS = 1_960_862


def link_inputs(work: Path, name: str, year: int) -> Path:
    """`work/<name>/` holding links to the default region's grid and mosaic."""
    folder = work / name / REGION
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("grid.parquet", f"mosaic_{year}.tif"):
        link = folder / f
        if not link.exists():
            link.symlink_to(ROOT / "data" / REGION / f)
    return folder


def train_lenet(folder: Path, epochs: int) -> float:
    """Fit a LeNet on data/valle_de_mexico/patches.npz and save it as the final model in
    `folder`; return the fit seconds."""
    from omegaconf import OmegaConf

    from urbanmap.core import config
    from urbanmap.training import models
    from urbanmap.training.patchset import CLASSES, load_patches

    cfg = config.load(ROOT, ["model=lenet", f"model.trainer.max_epochs={epochs}"])
    ps = load_patches(ROOT / "data" / REGION / "patches.npz")
    clf = models.build(cfg.model, ps.bands, ps.patch_size, int(cfg.seed), int(cfg.compute.threads))
    start = time.perf_counter()
    clf.fit(ps.patches, ps.label)
    seconds = time.perf_counter() - start
    card = {"name": "lenet", "kind": "torch", "bands": list(ps.bands), "patch_size": ps.patch_size,
            "cell_size": ps.cell_size, "pixel_size": ps.cell_size / ps.patch_size, "crs": ps.crs,
            "classes": list(CLASSES), "threshold": 0.5, "year": ps.year, "samples": len(ps),
            "seed": int(cfg.seed), "config": OmegaConf.to_container(cfg.model, resolve=True)}
    models.save(clf, folder, card)
    return seconds


def measure(work: Path, name: str, year: int, repeats: int) -> dict:
    import rasterio

    from urbanmap.core import config, io, paths
    from urbanmap.core.lattice import PixelLattice, patch_size
    from urbanmap.mapping.classify import predict_cells
    from urbanmap.training import models
    from urbanmap.training.patchset import check_mosaic, read_patches, valid_patches

    overrides = [f"out_dir={work / name}", f"period={year}", "tracking.enabled=false"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "urbanmap", "predict", *overrides], cwd=ROOT,
                          capture_output=True, text=True)
    cli = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"urbanmap predict failed ({name}):\n{proc.stderr}")
    cfg = config.load(ROOT, overrides)
    summary = json.loads(paths.predictions_summary(cfg, year).read_text())

    grid, cell_size, crs = io.read_cells(paths.grid(cfg), "grid", ["cell_id"])
    lattice = PixelLattice.from_cells(grid["col"], grid["row"], cell_size,
                                      patch_size(cell_size, cfg.data.pixel_size, cfg.data.patch_size), crs)
    clf, card = models.load(paths.model_dir(cfg))
    if card["kind"] == "torch":
        import torch

        torch.set_num_threads(int(cfg.compute.threads))
    cols, rows = grid["col"].to_numpy(), grid["row"].to_numpy()
    with rasterio.open(paths.mosaic(cfg, year)) as src:
        indexes = check_mosaic(src, lattice, "mosaic", card["bands"])
        patches = read_patches(src, lattice, cols, rows, indexes)
        patches = patches[valid_patches(patches, src.nodata)]
        loop, bare = best_of(
            repeats,
            lambda: predict_cells(clf, src, lattice, cols, rows, indexes, int(cfg.predict.block_cells), progress=False),
            lambda: clf.predict_proba(patches),
        )
        # Python-side peak memory of one streamed pass (NumPy reports to tracemalloc):
        # about one block of patches, not the region.
        peaks = {}
        for side in sorted({8, int(cfg.predict.block_cells)}):
            tracemalloc.start()
            predict_cells(clf, src, lattice, cols, rows, indexes, side, progress=False)
            peaks[side] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    n = len(grid)
    return {"peak_mb": peaks, "patches_mb": patches.nbytes / 2**20, "model": name, "cells": n, "valid": len(patches), "cli_s": cli, "stage_loop_s": summary["seconds"],
            "loop_s": loop, "bare_s": bare, "cells_per_s_cli": n / cli, "cells_per_s_loop": n / loop,
            "cells_per_s_bare": len(patches) / bare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--year", type=int, default=2019)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lenet-epochs", type=int, default=3)
    parser.add_argument("--lenet-model", type=Path, default=None, help="a saved LeNet model folder to use")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_predict"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import shutil

    rows = []
    for name in ("extra_trees", "lenet"):
        folder = link_inputs(args.work, name, args.year)
        model = folder / "model"
        if name == "extra_trees":
            if model.exists():
                shutil.rmtree(model)
            shutil.copytree(ROOT / "data" / REGION / "model", model)
        elif args.lenet_model and args.lenet_model.resolve() != model.resolve():
            if model.exists():
                shutil.rmtree(model)
            shutil.copytree(args.lenet_model, model)
        elif not (model / "model_card.json").is_file():
            print(f"training a LeNet ({args.lenet_epochs} epochs) on patches.npz ...", flush=True)
            print(f"  fit {train_lenet(model, args.lenet_epochs):.1f} s -> {model}", flush=True)
        rows.append(measure(args.work, name, args.year, args.repeats))

    print(f"\npredict {REGION} {args.year}: {rows[0]['cells']:,} cells, best of {args.repeats} "
          f"(loop, bare); machine shared, timings noisy")
    head = f"{'model':<12}{'cli s':>8}{'loop s':>8}{'bare s':>8}{'cli c/s':>9}{'loop c/s':>10}{'bare c/s':>10}" \
           f"{'loop/bare':>10}{'cli/bare':>9}{'Mexico(loop)':>14}{'target':>8}"
    print(head)
    for r in rows:
        mexico = MEXICO_CELLS / r["cells_per_s_loop"]
        print(f"{r['model']:<12}{r['cli_s']:>8.1f}{r['loop_s']:>8.2f}{r['bare_s']:>8.2f}{r['cells_per_s_cli']:>9.0f}"
              f"{r['cells_per_s_loop']:>10.0f}{r['cells_per_s_bare']:>10.0f}{r['loop_s'] / r['bare_s']:>10.2f}"
              f"{r['cli_s'] / r['bare_s']:>9.1f}{mexico / 60:>11.1f} min{'ok' if r['cli_s'] <= 60 else 'MISS':>8}")
    print("\npeak memory of the streamed loop (tracemalloc): " + "; ".join(
        f"{r['model']} " + ", ".join(f"{v:.0f} MB at block_cells={k}" for k, v in r["peak_mb"].items())
        + f" (all the region's patches: {r['patches_mb']:.0f} MB)" for r in rows))
    print(f"Mexico ({MEXICO_CELLS:,} cells) at the loop's rate: " + "; ".join(
        f"{r['model']} {MEXICO_CELLS / r['cells_per_s_loop'] / 60:.1f} min (bare inference "
        f"{MEXICO_CELLS / r['cells_per_s_bare'] / 60:.1f} min)" for r in rows))


if __name__ == "__main__":
    main()

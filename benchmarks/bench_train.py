"""Benchmark: patch extraction, Extra Trees fit, and LeNet training throughput.

    python benchmarks/bench_train.py [--cells 48] [--samples 2000] [--epochs 3] [--repeats 3]

All inputs are synthetic and built in a temporary folder (urbanmap.examples.tiny:
a labelled grid and a tiled float32 GeoTIFF on its pixel lattice).
Each figure is paired with a baseline measured in the same run, and each measurement is
repeated (`--repeats`, alternating with its baseline) keeping the best, because other
processes on the machine make single timings noisy:

  patches     `patchset.read_patches` (block-wise windowed reads, one pass) for every
              labelled cell, patches/s; baseline: one windowed read per cell from the
              same open file.
  extra trees fit seconds of the default Extra Trees (200 trees) on `--samples`
              patches, flattened (6,534 features, the pilot's) and as band / index
              statistics (77 features); feature computation included.
  lenet       `TorchPatchClassifier.fit` (the whole Lightning fit loop: data module,
              normalisation, seeded loaders, augmentation, validation split and
              validation epochs, early-stopping callbacks) in training samples/s;
              baseline: the bare loop of forward + backward + AdamW step over in-memory
              tensors with the same net, batch size and threads. Ratio target: >= 0.7.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from timing import best_of
from urbanmap.examples import tiny

ROOT = Path(__file__).resolve().parents[1]


def bench_patches(folder: Path, cells_side: int, repeats: int):
    import rasterio

    from urbanmap.training.patchset import read_patches

    cells = tiny.labelled_cells(cells_side, cells_side)
    tiny.write_mosaic(folder / "mosaic.tif", cells)
    lattice = tiny.lattice_of(cells)
    sel = cells[cells["label"] != "excluded"]
    cols, rows = sel["col"].to_numpy(), sel["row"].to_numpy()
    idx = [1, 2, 3, 4, 5, 6]
    with rasterio.open(folder / "mosaic.tif") as src:
        def blockwise():
            return read_patches(src, lattice, cols, rows, idx)

        def per_cell():
            return np.stack([src.read(idx, window=lattice.cell_window(c, r)) for c, r in zip(cols, rows)])

        assert np.array_equal(blockwise(), per_cell())
        t_block, t_cell = best_of(repeats, blockwise, per_cell)
    n = len(cols)
    print(f"patches      {n:,} cells of a {cells_side} x {cells_side}-cell mosaic ({lattice.width} x {lattice.height} px x 6 bands)")
    print(f"  block-wise one pass   {n / t_block:10,.0f} patches/s  ({t_block:.2f} s)")
    print(f"  one read per cell     {n / t_cell:10,.0f} patches/s  ({t_cell:.2f} s)")
    print(f"  ratio                 {t_cell / t_block:10.1f}x")


def sample_patches(samples: int, seed: int = 0):
    """`samples` patches (half urban) of a synthetic scene, in memory."""
    import rasterio

    from urbanmap.training.sampler import extract

    side = int(np.ceil(np.sqrt(samples * 1.6))) + 4
    cells = tiny.labelled_cells(side, side, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        tiny.write_mosaic(Path(tmp) / "m.tif", cells)
        with rasterio.open(Path(tmp) / "m.tif") as src:
            return extract(cells, tiny.lattice_of(cells), src, tiny.BANDS, samples // 2, seed, 2010)


def bench_extra_trees(ps, repeats: int):
    from urbanmap.core import config
    from urbanmap.training import models

    base = config.load(ROOT).model  # the default Extra Trees: 200 trees, n_jobs 2

    def fit(groups):
        cfg = config.load(ROOT, [f"model.features.groups=[{','.join(groups)}]"]).model
        return lambda: models.build(cfg, ps.bands, ps.patch_size, seed=0).fit(ps.patches, ps.label)

    t_flat, t_stats = best_of(repeats, fit(["flat"]), fit(["band_stats", "index_stats"]))
    print(f"extra trees  {len(ps):,} patches, {base.estimator.n_estimators} trees, n_jobs {base.estimator.n_jobs}")
    print(f"  flat (6,534 features)     fit {t_flat:6.2f} s")
    print(f"  band + index statistics   fit {t_stats:6.2f} s")


def bench_lenet(ps, epochs: int, repeats: int, threads: int):
    import torch
    from torch.nn import functional as F

    from urbanmap.core import config
    from urbanmap.training import models
    from urbanmap.training.models.datamodule import band_stats, normalise
    from urbanmap.training.models.torch_model import build_net, seed_all

    cfg = config.load(ROOT, ["model=lenet", f"model.trainer.max_epochs={epochs}",
                             f"model.trainer.early_stopping_patience={epochs + 1}"]).model
    t = cfg.trainer
    n_fit = len(ps) - int(np.ceil(len(ps) * t.validation_fraction))  # the training part of the fit

    def lightning_fit():
        clf = models.build(cfg, ps.bands, ps.patch_size, seed=0, threads=threads).fit(ps.patches, ps.label)
        assert clf.epochs == epochs

    def bare():
        seed_all(0, threads)
        net = build_net(dict(cfg.net), len(ps.bands), ps.patch_size, ps.bands)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
        mean, std = band_stats(ps.patches[:n_fit])
        x, y = normalise(ps.patches[:n_fit], mean, std), torch.from_numpy(ps.label[:n_fit].astype(np.int64))
        net.train()
        for _ in range(epochs):
            for i in range(0, n_fit, t.batch_size):
                loss = F.cross_entropy(net(x[i : i + t.batch_size]), y[i : i + t.batch_size])
                opt.zero_grad()
                loss.backward()
                opt.step()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_bare, t_fit = best_of(repeats, bare, lightning_fit)
    samples = n_fit * epochs
    print(f"lenet        {n_fit:,} training samples x {epochs} epochs, batch {t.batch_size}, {threads} threads")
    print(f"  bare step loop (in-memory tensors)   {samples / t_bare:8,.0f} samples/s  ({t_bare:.2f} s)")
    print(f"  Lightning fit (loaders, augmentation, validation)  {samples / t_fit:8,.0f} samples/s  ({t_fit:.2f} s)")
    print(f"  ratio fit / bare                     {t_bare / t_fit:8.2f}   (target >= 0.7)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=48, help="side of the mosaic in cells (patches benchmark)")
    parser.add_argument("--samples", type=int, default=2000, help="patches for Extra Trees and LeNet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_patches(Path(tmp), args.cells, args.repeats)
    ps = sample_patches(args.samples)
    bench_extra_trees(ps, args.repeats)
    bench_lenet(ps, args.epochs, args.repeats, args.threads)


if __name__ == "__main__":
    main()

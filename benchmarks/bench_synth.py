"""Benchmark: the `synth` stage for one year of the default region, against baselines.

    python benchmarks/bench_synth.py [year=2019] [other overrides]

Each step runs in its own process so that its peak memory (max RSS) is its own:
  synth        the stage: one task per tile (executor.run_tiles: landscape, sky, DN, QA
               and truth parts), 16 products assembled into COGs, catalog, truth
  io-floor     writing the stage's products again (read first, untimed): the floor set
               by deflate and the disk
  field        one cloud field of a scene's size at 4 km correlation (coarse lattice +
               interpolation, fields.field)
  field-direct the same field by a full-resolution Gaussian filter (what it replaces)
  truth        the cloud-free truth on the scenes' grid: reflectance at the median
               seasonal state (exact, since reflectance is affine in the state)
  truth-stack  the same truth by stacking every date and taking the median (what it
               replaces; checks that both agree)
Prints seconds, peak RSS and the ratios. Outputs go to a temporary directory; the grid
is built there first. Timings are noisy on a shared machine: run it twice.
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
STEPS = ("synth", "io-floor", "field", "field-direct", "truth", "truth-stack")
SCENE_SHAPE = (2150, 1900)  # about one default-region scene window


def _landscape(cfg):
    """The region's whole world landscape in one piece (the stage builds it tile by tile:
    the values are the same), end-members and seasonal states."""
    from pyproj import Transformer

    from urbanmap.core import io, paths
    from urbanmap.core.lattice import PixelLattice, patch_size
    from urbanmap.imagery.synth import landcover, schedule, tiles
    from urbanmap.imagery.synth.endmembers import read_endmembers
    from urbanmap.imagery.synth.stage import World, _footprints, _landscape_params, _settlements

    s = cfg.synth
    em = read_endmembers(s.spectra, {k: list(v) for k, v in s.endmembers.items()}, float(s.max_reflectance))
    cells, cell_size, crs = io.read_cells(paths.grid(cfg), "grid", columns=["cell_id"])
    lattice = PixelLattice.from_cells(cells["col"], cells["row"], cell_size, patch_size(cell_size, 30, None), crs)
    x0, y0, x1, y1 = lattice.bounds
    utm = schedule.utm_crs(*Transformer.from_crs(crs, 4326, always_xy=True).transform((x0 + x1) / 2, (y0 + y1) / 2))
    world = World.around(lattice.bounds, crs, utm, float(s.margin), float(s.pixel_size))
    year = paths.stage_year(cfg)
    settlements = Path(cfg.out_dir) / "settlements.parquet"
    _settlements(cfg, world, lattice).to_parquet(settlements)
    job = tiles.Job(int(cfg.seed), float(s.pixel_size), _landscape_params(cfg), em, str(settlements), float(s.urban_min.pixel))
    land = tiles.landscape(world.win, job, grown=False)
    sensors = schedule.sensors_for_year(year, s.sensors)
    acqs = schedule.acquisitions(year, sensors, _footprints(s, world.bounds), int(s.scenes_per_footprint))
    ph = s.phenology
    return land, em, [landcover.seasonal_state(a.acquired, ph.peak_doy, ph.crop_peak_doy, ph.crop_days) for a in acqs]


def run_step(step: str, overrides: list[str]) -> dict:
    """Run one step in this process; return its figures."""
    import numpy as np

    from urbanmap.core import config, paths

    cfg = config.load(ROOT, overrides)
    extra = {}
    if step in ("truth", "truth-stack"):
        land, em, states = _landscape(cfg)
    start = time.perf_counter()
    if step == "synth":
        from urbanmap.imagery.synth import run

        summary = run(cfg)
        folder = paths.scenes_dir(cfg, summary["year"])
        extra = {"scenes": summary["scenes"], "output_mb": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6}
    elif step == "io-floor":
        import rasterio

        from urbanmap.imagery.landsat import BANDS, scene_from_folder
        from urbanmap.imagery.synth.scenes import write_product

        year = paths.stage_year(cfg)
        seconds, count = 0.0, 0
        for folder in sorted(p for p in paths.scenes_dir(cfg, year).iterdir() if p.is_dir()):
            scene = scene_from_folder(folder)
            with rasterio.open(scene.qa_pixel) as src:
                qa, crs, transform = src.read(1), src.crs, src.transform
            dn = np.stack([rasterio.open(scene.bands[b]).read(1) for b in BANDS])
            t0 = time.perf_counter()
            write_product(Path(cfg.out_dir) / "floor" / scene.product_id, scene.product_id, dn, qa, crs, transform, 2)
            seconds += time.perf_counter() - t0
            count += 1
        extra = {"scenes": count}
    elif step == "field":
        from urbanmap.imagery.synth.fields import Win, field

        field((0, 1), Win(0, 0, *SCENE_SHAPE), 4000 / 30)
    elif step == "field-direct":
        from scipy import ndimage

        white = np.random.default_rng(0).standard_normal(SCENE_SHAPE).astype(np.float32)
        ndimage.gaussian_filter(white, sigma=4000 / 30 / 2)
    elif step == "truth":
        from urbanmap.imagery.synth.landcover import reflectance

        med = [float(np.median([s[k] for s in states])) for k in (0, 1)]
        out = reflectance(land, em, *med)
        np.save(Path(cfg.out_dir) / "truth.npy", out[:, ::7, ::7])
    elif step == "truth-stack":
        from urbanmap.imagery.synth.landcover import reflectance

        per_date = [reflectance(land, em, *s) for s in states]
        out = np.empty_like(per_date[0])
        for b in range(out.shape[0]):
            out[b] = np.median(np.stack([r[b] for r in per_date]), axis=0)
        ref = np.load(Path(cfg.out_dir) / "truth.npy")
        extra = {"max_abs_diff_vs_truth": float(np.abs(out[:, ::7, ::7] - ref).max())}
    if step != "io-floor":
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": step, "seconds": seconds, "peak_mb": peak_mb, **extra}


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as out:
        overrides = [*overrides, f"out_dir={out}"]
        subprocess.run([sys.executable, "-m", "urbanmap", "grid", *overrides], cwd=ROOT, check=True, capture_output=True)
        results = {}
        for step in STEPS:
            proc = subprocess.run(
                [sys.executable, __file__, "--step", step, *overrides], cwd=ROOT, capture_output=True, text=True, check=True,
            )
            results[step] = json.loads(proc.stdout.strip().splitlines()[-1])
            if step == "synth":
                print(proc.stdout.strip().splitlines()[0])
    print(f"\n{'step':<13} {'seconds':>8} {'peak MB':>8}  notes")
    for r in results.values():
        notes = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items() if k not in ("step", "seconds", "peak_mb"))
        print(f"{r['step']:<13} {r['seconds']:8.2f} {r['peak_mb']:8.0f}  {notes}")
    sec = {k: v["seconds"] for k, v in results.items()}
    print(f"\nsynth stage / io floor:          {sec['synth'] / sec['io-floor']:.1f}x")
    print(f"field-direct / field:            {sec['field-direct'] / sec['field']:.1f}x")
    print(f"truth-stack / truth:             {sec['truth-stack'] / sec['truth']:.1f}x"
          f" (peak {results['truth-stack']['peak_mb'] / results['truth']['peak_mb']:.1f}x memory)")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--step"]:
        print(json.dumps(run_step(args[1], args[2:])))
    else:
        main(args)

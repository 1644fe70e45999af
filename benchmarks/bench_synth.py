"""Benchmark: the `synth` stage for one year of the default region, against baselines.

    python benchmarks/bench_synth.py [--help] [year=2019] [other overrides]

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
    the values are the same), end-members and seasonal states, through the stage's own
    steps."""
    from urbanmap.imagery.synth import landcover, schedule, stage, tiles
    from urbanmap.imagery.synth.acquisitions import footprints
    from urbanmap.imagery.synth.endmembers import read_endmembers
    from urbanmap.imagery.synth.settings import SynthSettings

    s = SynthSettings.from_config(cfg)
    em = read_endmembers(s.spectra, s.endmembers, s.max_reflectance)
    _, lattice = stage.read_lattice(s)
    world = stage.scene_world(s, lattice)
    folder = Path(cfg.out_dir)
    places = stage.settlements(s, world, lattice)
    tiles.write_polygons(places, folder / "settlements.parquet")  # as the stage writes them for its tasks
    parts, sprawl = stage.urban_zones(s, places)
    job = tiles.Job(s.seed, s.pixel, dict(s.landscape), em, str(folder / "settlements.parquet"), s.urban_min_pixel,
                    young=stage.young_file(s, parts, s.year, places.crs, folder),
                    sprawl=stage.zone_file(sprawl, places.crs, folder / "sprawl.parquet"))
    land = tiles.landscape(world.win, job, grown=False)
    acqs = schedule.acquisitions(s.year, s.sensors, footprints(s, world.bounds), s.scenes_per_footprint)
    return land, em, [landcover.seasonal_state(a.acquired, s.peak_doy, s.crop_peak_doy, s.crop_days) for a in acqs]


def step_synth(cfg, prepared) -> tuple[float | None, dict]:
    """The stage itself; its products' size."""
    from urbanmap.core import paths
    from urbanmap.imagery.synth import run

    summary = run(cfg)
    folder = paths.scenes_dir(cfg, summary["period"])
    return None, {"scenes": summary["scenes"],
                  "output_mb": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6}


def step_io_floor(cfg, prepared) -> tuple[float | None, dict]:
    """Writing the stage's products again (each read first, untimed): its own seconds."""
    import numpy as np
    import rasterio

    from urbanmap.core import paths
    from urbanmap.imagery.landsat import BANDS, scene_from_folder
    from urbanmap.imagery.synth.scenes import write_product

    year = paths.stage_period(cfg)
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
    return seconds, {"scenes": count}


def step_field(cfg, prepared) -> tuple[float | None, dict]:
    """One cloud field of a scene's size (fields.field)."""
    from urbanmap.imagery.synth.fields import Win, field

    field((0, 1), Win(0, 0, *SCENE_SHAPE), 4000 / 30)
    return None, {}


def step_field_direct(cfg, prepared) -> tuple[float | None, dict]:
    """The same field by a full-resolution Gaussian filter."""
    import numpy as np
    from scipy import ndimage

    white = np.random.default_rng(0).standard_normal(SCENE_SHAPE).astype(np.float32)
    ndimage.gaussian_filter(white, sigma=4000 / 30 / 2)
    return None, {}


def step_truth(cfg, prepared) -> tuple[float | None, dict]:
    """The truth at the median seasonal state (saved, decimated, for truth-stack)."""
    import numpy as np

    from urbanmap.imagery.synth.landcover import reflectance

    land, em, states = prepared
    med = [float(np.median([s[k] for s in states])) for k in (0, 1)]
    out = reflectance(land, em, *med)
    np.save(Path(cfg.out_dir) / "truth.npy", out[:, ::7, ::7])
    return None, {}


def step_truth_stack(cfg, prepared) -> tuple[float | None, dict]:
    """The truth by stacking every date and taking the median; its difference to truth's."""
    import numpy as np

    from urbanmap.imagery.synth.landcover import reflectance

    land, em, states = prepared
    per_date = [reflectance(land, em, *s) for s in states]
    out = np.empty_like(per_date[0])
    for b in range(out.shape[0]):
        out[b] = np.median(np.stack([r[b] for r in per_date]), axis=0)
    ref = np.load(Path(cfg.out_dir) / "truth.npy")
    return None, {"max_abs_diff_vs_truth": float(np.abs(out[:, ::7, ::7] - ref).max())}


STEP_FUNCTIONS = {"synth": step_synth, "io-floor": step_io_floor, "field": step_field, "field-direct": step_field_direct,
                  "truth": step_truth, "truth-stack": step_truth_stack}


def run_step(step: str, overrides: list[str]) -> dict:
    """Run one step in this process; return its figures (seconds: from the clock's start,
    after the untimed preparation, unless the step times itself)."""
    from urbanmap.core import config

    cfg = config.load(ROOT, overrides)
    prepared = _landscape(cfg) if step in ("truth", "truth-stack") else None
    start = time.perf_counter()
    seconds, extra = STEP_FUNCTIONS[step](cfg, prepared)
    if seconds is None:
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
    if {"-h", "--help"} & set(args):
        print(__doc__)
    elif args[:1] == ["--step"]:
        print(json.dumps(run_step(args[1], args[2:])))
    else:
        main(args)

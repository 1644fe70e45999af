"""Benchmark: the `mosaic` stage on synth's scenes of the default region, against the
bare costs of its two unavoidable parts, all measured in one run.

    python benchmarks/bench_mosaic.py [--work DIR] [--no-big] [--repeat N] [key=value ...]

key=value: config overrides passed to every step (e.g. compute.tile_size=64).

Scenes: `urbanmap grid` + `urbanmap synth period=2019` into DIR (default
/tmp/urbanmap-bench; reused when already there), for the default region and, unless
--no-big, for a region four times larger (120 km x 120 km, same centre).

Steps, each in its own process so that its peak memory (max RSS) is its own:
  stacks     untimed: the stage's own per-block masked, warped stacks (blocks.prepare_block),
             for mosaic.spread=[] (uint16 DN) and for the configured spread bands
             (float32), saved under DIR/kernel-stacks
  read       bare read: every band and QA file of the year's scenes into memory with
             rasterio (whole files), with compute.threads threads
  stage      `urbanmap mosaic` end to end (read + mask + warp + geomedian + write COG)
  kernel     bare kernel: the saved stacks loaded (untimed), then geomad's kernels on
             them as the stage calls them, timed: the geomedian + count on the DN
             stacks, and the geomedian + the configured spread bands + count
  stage-gm   the stage with mosaic.spread=[] (geomedian + count only)
  agreement  geomad once on the whole region's stack (all scenes, every pixel) against
             the stage's COG
  stage-big  the stage on the region four times larger (memory)
Prints seconds, peak RSS, the overhead ratios stage / (read + kernel), pixel x
observations per second, agreement, and the quality against synth's truth.

--repeat N (default 3): read, stage, kernel and stage-gm run N times each, in turns
(read, stage, kernel, stage-gm, read, ...), each time in a fresh process, so that a
slow spell of a shared machine falls on both sides of the ratio. Each figure is the
median run's (a single run of the stage varies by up to +-0.5 s on this machine).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
YEAR = 2019
DEFAULT_WINDOW = [2770000, 799000, 2830000, 859000]
BIG_WINDOW = [2740000, 769000, 2860000, 889000]  # 4x the area, same centre


def _cfg(work: Path, name: str, window, extra=()):
    from urbanmap.core import config

    return config.load(ROOT, [f"out_dir={work}", f"data.name={name}", f"data.window=[{','.join(map(str, window))}]",
                              f"period={YEAR}", *extra])


def _overrides(work: Path, name: str, window, extra=()):
    return [f"out_dir={work}", f"data.name={name}", f"data.window=[{','.join(map(str, window))}]", f"period={YEAR}", *extra]


def ensure_scenes(work: Path, name: str, window) -> None:
    """Grid + synth for the region, unless already there."""
    region = work / name
    if (region / "scenes" / str(YEAR) / "catalog.json").is_file() and (region / "truth" / str(YEAR)).is_dir():
        return
    for stage in ("grid", "synth"):
        print(f"[setup] urbanmap {stage} {name} ...", flush=True)
        subprocess.run([sys.executable, "-m", "urbanmap", stage, *_overrides(work, name, window)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(cfg):
    """What the mosaic stage reads before it builds, as mosaic.run reads it: (the grid's
    cells, the pixel lattice, MosaicSettings, the year's products)."""
    from urbanmap.imagery import mosaic
    from urbanmap.imagery.blocks import MosaicSettings

    stage = mosaic.MosaicStageSettings.from_config(cfg)
    cells, lattice = mosaic.read_lattice(stage.grid, stage.pixel_size, stage.patch_size)
    opts = MosaicSettings.from_config(cfg, lattice.pixel_size)
    products, _ = mosaic.find_products(stage.source, lattice)
    return cells, lattice, opts, products


def step_read(cfg) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import rasterio

    from urbanmap.imagery import scenes

    _, lattice, opts, products = _load(cfg)
    files = [p.href(name) for p in products for name in scenes.FILES]

    def read(path):
        with rasterio.open(path) as ds:
            return ds.read(1).size

    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(opts.threads) as pool:
        pixels = sum(pool.map(read, files))
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu, "files": len(files), "pixels_read": pixels}


def _stacks_dir(work: Path) -> Path:
    return work / "kernel-stacks"


def step_stacks(cfg, work: Path) -> dict:
    """Untimed: the stage's own per-block stacks (read, warped, masked by
    blocks.prepare_block), for mosaic.spread=[] (uint16 DN) and for the configured spread
    bands (float32), saved under <work>/kernel-stacks for the kernel and agreement steps."""
    import dataclasses
    import shutil

    import rasterio

    from urbanmap.imagery import blocks

    cells, lattice, opts, products = _load(cfg)
    planned = blocks.plan(products, lattice, cells["col"].to_numpy(), cells["row"].to_numpy(), opts)
    folder = _stacks_dir(work)
    shutil.rmtree(folder, ignore_errors=True)
    meta = {"blocks": [[b.row_off, b.col_off, b.height, b.width] for b in planned], "shape": [lattice.height, lattice.width],
            "n_products": len(products), "threads": opts.threads, "eps": opts.eps, "max_iters": opts.max_iters,
            "spread": list(opts.spread)}
    for kind, o in (("gm", dataclasses.replace(opts, spread=())), ("full", opts)):
        (folder / kind).mkdir(parents=True)
        reader = blocks.SceneReader(products, planned)
        with rasterio.Env(GDAL_CACHEMAX=o.gdal_cache_mb * 2**20):
            for b, block in enumerate(planned):
                x, calibration, used, _ = blocks.prepare_block(b, block, reader, lattice, o)
                np.save(folder / kind / f"{b}.npy", x)
                meta[f"{kind}-{b}"] = {"calibration": calibration, "used": list(map(int, used))}
        reader.close()
    (folder / "meta.json").write_text(json.dumps(meta))
    return {"blocks": len(planned)}


def _load_stacks(work: Path, kind: str):
    folder = _stacks_dir(work)
    meta = json.loads((folder / "meta.json").read_text())
    stacks = [(np.load(folder / kind / f"{b}.npy"), meta[f"{kind}-{b}"]["calibration"], meta[f"{kind}-{b}"]["used"])
              for b in range(len(meta["blocks"]))]
    return meta, stacks


def step_kernel(work: Path) -> dict:
    """Timed: geomad's kernels on the saved stacks, as the stage calls them: the
    geomedian + count on the DN stacks of mosaic.spread=[], and the geomedian + the
    configured spread bands + count on the float32 stacks."""
    import geomad

    def gm_only(x, calibration, meta):
        """The geomedian as the stage calls it (per-pixel rows; DN stacks with nodata 0)."""
        h, w, b, n = x.shape
        kw = dict(nodata=0, scale=calibration[0], offset=calibration[1]) if calibration else {}
        gm = geomad.nangeomedian_pcm(x.reshape(h * w, 1, b, n), num_threads=meta["threads"], eps=meta["eps"],
                                     maxiters=meta["max_iters"], **kw)
        np.count_nonzero(x[:, :, 0, :] if calibration else ~np.isnan(x[:, :, 0, :]), axis=-1)
        return gm.reshape(h, w, b)

    def full(x, calibration, meta):
        gm = gm_only(x, calibration, meta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for name in meta["spread"]:
                getattr(geomad, f"{name}_pcm")(x, gm, num_threads=meta["threads"])

    result = {}
    for kind, fn in (("gm", gm_only), ("full", full)):
        meta, stacks = _load_stacks(work, kind)
        start, cpu = time.perf_counter(), time.process_time()
        for x, calibration, _ in stacks:
            fn(x, calibration, meta)
        result[kind] = (time.perf_counter() - start, time.process_time() - cpu)
        if kind == "full":
            result["stacked"] = sum(x.shape[0] * x.shape[1] * x.shape[3] for x, _, _ in stacks)
        del stacks
    return {"seconds": result["full"][0], "cpu": result["full"][1], "seconds_gm": result["gm"][0],
            "cpu_gm": result["gm"][1], "stacked": result["stacked"]}


def step_agreement(work: Path, cog_path: str) -> dict:
    """Geomad once on the whole region's stack (every scene an observation) against the
    stage's COG."""
    import rasterio

    from urbanmap.imagery import geomedian

    meta, stacks = _load_stacks(work, "full")
    height, width = meta["shape"]
    whole = np.full((height, width, 6, meta["n_products"]), np.nan, np.float32)
    inside = np.zeros((height, width), bool)
    for (row, col, h, w), (x, _, used) in zip(meta["blocks"], stacks):
        whole[row:row + h, col:col + w][..., used] = x
        inside[row:row + h, col:col + w] = True
    del stacks
    start = time.perf_counter()
    ref = geomedian.composite(whole, meta["spread"], True, meta["threads"], meta["eps"], meta["max_iters"])
    seconds_whole = time.perf_counter() - start
    del whole
    with rasterio.open(cog_path) as src:
        got = src.read()
    diff = np.abs(got[:, inside] - ref[: got.shape[0], inside])
    same_nan = bool((np.isnan(got[:, inside]) == np.isnan(ref[: got.shape[0], inside])).all())
    return {"seconds_whole_region": seconds_whole, "max_abs_diff_gm": float(np.nanmax(diff[:6])),
            "max_abs_diff_all": float(np.nanmax(diff)), "same_nodata": same_nan}


#: What `urbanmap mosaic` imports; imported before the stage's clock starts, as the bare
#: steps import rasterio and geomad before theirs (interpreter start-up and imports are
#: no part of read + mask + warp + geomedian + write; their time is printed apart).
STAGE_IMPORTS = ("rasterio", "rasterio.warp", "rasterio.shutil", "geomad", "pystac", "pyproj", "pandas",
                 "pyarrow.parquet", "tqdm", "urbanmap.imagery.scenes", "urbanmap.imagery.warp", "urbanmap.core.cog",
                 "urbanmap.compute.executor", "urbanmap.core.io", "urbanmap.core.lattice", "urbanmap.imagery.geomedian",
                 "urbanmap.imagery.blocks")


def step_stage(cfg) -> dict:
    import importlib

    start = time.perf_counter()
    for name in STAGE_IMPORTS:
        importlib.import_module(name)
    imports = time.perf_counter() - start
    from urbanmap.core import paths
    from urbanmap.imagery import mosaic

    start, cpu = time.perf_counter(), time.process_time()
    mosaic.run(cfg)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    summary = json.loads(paths.mosaic_summary(cfg, YEAR).read_text())
    return {"seconds": seconds, "cpu": cpu, "imports": imports, "stacked": summary["pixel_observations_stacked"],
            "summary": summary, "cog": str(paths.mosaic(cfg, YEAR))}


def quality(cfg) -> dict:
    """Valid share of the region's pixels, scenes' cloud cover, and per land-cover class
    the mosaic's median reflectance minus the truth's (synth's truth rasters)."""
    import pystac
    import rasterio

    from urbanmap.core import paths
    from urbanmap.imagery.synth.landcover import CLASS_NAMES

    with rasterio.open(paths.mosaic(cfg, YEAR)) as src:
        mos = src.read(list(range(1, 7)))
    with rasterio.open(paths.truth_reflectance(cfg, YEAR)) as src:
        truth = src.read()
    with rasterio.open(paths.truth_landcover(cfg, YEAR)) as src:
        lc = src.read(1)
    valid = ~np.isnan(mos[0])
    catalog = pystac.Catalog.from_file(str(paths.scene_catalog(cfg, YEAR)))
    clouds = [item.properties["eo:cloud_cover"] for item in catalog.get_items(recursive=True)]
    per_class = {}
    for code, name in CLASS_NAMES.items():
        sel = lc == code
        if sel.sum() == 0:
            continue
        d = np.nanmedian(mos[:, sel & valid], axis=1) - np.median(truth[:, sel], axis=1)
        per_class[name] = {"pixels": int(sel.sum()), "max_abs_median_diff": float(np.abs(d).max()),
                           "diff_by_band": [round(float(v), 4) for v in d]}
    return {"valid_fraction": float(valid.mean()), "scene_cloud_cover_min_pct": min(clouds),
            "scene_cloud_cover_max_pct": max(clouds), "per_class": per_class}


def run_step(step: str, work: Path, extra: list[str]) -> dict:
    name, window = ("big", BIG_WINDOW) if step == "stage-big" else ("valle_de_mexico", DEFAULT_WINDOW)
    more = ["mosaic.spread=[]"] if step == "stage-gm" else []
    out = work / ("gm-only" if step == "stage-gm" else "")
    if step == "stage-gm":  # its own out_dir, sharing the scenes and grid through a link
        (out / name).mkdir(parents=True, exist_ok=True)
        for sub in ("scenes", "grid.parquet"):
            link = out / name / sub
            if not link.exists():
                link.symlink_to(work / name / sub)
    cfg = _cfg(out if step == "stage-gm" else work, name, window, [*more, *extra])
    if step == "read":
        result = step_read(cfg)
    elif step == "stacks":
        result = step_stacks(cfg, work)
    elif step == "kernel":
        result = step_kernel(work)
    elif step == "agreement":
        result = step_agreement(work, str(work / name / f"mosaic_{YEAR}.tif"))
    elif step == "quality":
        result = quality(cfg)
    else:
        result = step_stage(cfg)
    result["peak_mb"] = _peak_mb()
    return result


def parse_options(args: list[str]) -> tuple[Path, bool, int, list[str]]:
    """(--work DIR, not --no-big, --repeat N, the config overrides left)."""
    work = Path("/tmp/urbanmap-bench")
    big = "--no-big" not in args
    args = [a for a in args if a != "--no-big"]
    if "--work" in args:
        i = args.index("--work")
        work = Path(args[i + 1])
        args = args[:i] + args[i + 2:]
    repeat = 3
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = max(1, int(args[i + 1]))
        args = args[:i] + args[i + 2:]
    return work, big, repeat, args


def run_steps(work: Path, args: list[str], steps: list[str], repeated: list[str], repeat: int) -> tuple[dict, dict]:
    """Run every step in its own process, the `repeated` ones `repeat` times in turns;
    returns (step -> its result, the median run's for the repeated ones; step -> its runs)."""
    # Every step with the stage's OpenMP wait policy (urbanmap/__init__.py), the bare
    # kernel too, which imports geomad before urbanmap: the same conditions for both
    # sides of the ratio.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}

    def run(step: str) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--step", step, str(work), *args], cwd=ROOT,
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"step {step} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"[{step}] {result['seconds'] if 'seconds' in result else '':>} done", flush=True)
        return result

    r = {"stacks": run("stacks")}
    runs: dict[str, list] = {step: [] for step in repeated}
    for _ in range(repeat):
        for step in repeated:
            runs[step].append(run(step))
    r.update({step: sorted(rs, key=lambda x: x["seconds"])[len(rs) // 2] for step, rs in runs.items()})
    for step in steps:
        if step not in r:
            r[step] = run(step)
    return r, runs


def report(r: dict, runs: dict, steps: list[str], repeated: list[str], big: bool) -> None:
    """Print the figures: seconds, CPU and peak memory per step, the overhead ratios,
    throughput, agreement, memory and quality."""
    s = r["stage"]["summary"]
    print(f"\nregion valle_de_mexico {YEAR}: {s['pixels']:,} pixels, {s['scenes_found']} scenes, "
          f"{s['mean_clear_per_pixel']:.2f} clear observations per pixel; threads = compute.threads")
    for step in repeated:
        times = ", ".join(f"{x['seconds']:.2f}" for x in runs[step])
        print(f"{step} runs: {times} s (median used)")
    print(f"\n{'step':<10} {'seconds':>8} {'CPU s':>8} {'peak MB':>8}")
    for step in steps:
        if "seconds" in r[step]:
            print(f"{step:<10} {r[step]['seconds']:8.2f} {r[step].get('cpu', float('nan')):8.2f} {r[step]['peak_mb']:8.0f}")
    read, kern = r["read"]["seconds"], r["kernel"]
    print(f"kernel gm  {kern['seconds_gm']:8.2f} {kern['cpu_gm']:8.2f}            (geomedian only, same stacks)")
    print(f"kernel 1x  {r['agreement']['seconds_whole_region']:8.2f}            (whole-region stack at once, for agreement)")
    print(f"imports    {r['stage']['imports']:8.2f}            (the stage's libraries, imported before its clock)")
    full = read + kern["seconds"]
    gm = read + kern["seconds_gm"]
    print(f"\noverhead  stage    / (read + kernel)    = {r['stage']['seconds']:.2f} / {full:.2f} = {r['stage']['seconds'] / full:.3f}  (target <= 1.25)")
    print(f"overhead  stage-gm / (read + kernel gm) = {r['stage-gm']['seconds']:.2f} / {gm:.2f} = {r['stage-gm']['seconds'] / gm:.3f}")
    cpu_full = r["read"]["cpu"] + kern["cpu"]
    cpu_gm = r["read"]["cpu"] + kern["cpu_gm"]
    print(f"CPU time  stage    / (read + kernel)    = {r['stage']['cpu']:.2f} / {cpu_full:.2f} = {r['stage']['cpu'] / cpu_full:.3f}")
    print(f"CPU time  stage-gm / (read + kernel gm) = {r['stage-gm']['cpu']:.2f} / {cpu_gm:.2f} = {r['stage-gm']['cpu'] / cpu_gm:.3f}")
    print("(wall-clock ratios suffer from other processes on the machine; CPU-time ratios measure the extra work)")
    print(f"throughput: {r['stage']['stacked'] / r['stage']['seconds'] / 1e6:.2f} M pixel x observations / s "
          f"(stage), {r['stage']['stacked'] / kern['seconds'] / 1e6:.2f} M (bare kernel); "
          f"{s['pixels'] * s['mean_clear_per_pixel'] / r['stage']['seconds'] / 1e6:.2f} M clear observations / s")
    a = r["agreement"]
    print(f"\nagreement: max |stage - geomad(whole stack)| = {a['max_abs_diff_gm']:.2e} (geomedian), "
          f"{a['max_abs_diff_all']:.2e} (all bands); same nodata: {a['same_nodata']}  (target <= 1e-4)")
    if big:
        ratio = r["stage-big"]["peak_mb"] / r["stage"]["peak_mb"]
        print(f"memory: peak RSS {r['stage']['peak_mb']:.0f} MB (default), {r['stage-big']['peak_mb']:.0f} MB "
              f"(4x region, {r['stage-big']['seconds']:.1f} s): ratio {ratio:.3f}  (targets <= 2048 MB, <= 1.10)")
    else:
        print(f"memory: peak RSS {r['stage']['peak_mb']:.0f} MB (default)  (target <= 2048 MB)")
    q = r["quality"]
    print(f"\nquality: {q['valid_fraction']:.4%} of the region's pixels valid (target >= 99.5%); scene cloud cover "
          f"{q['scene_cloud_cover_min_pct']:.0f}-{q['scene_cloud_cover_max_pct']:.0f}%")
    for name, c in q["per_class"].items():
        print(f"  {name:<11} {c['pixels']:>9,} px  max |median mosaic - median truth| = {c['max_abs_median_diff']:.4f}"
              f"  {c['diff_by_band']}  (target <= 0.02)")


def main(args: list[str]) -> None:
    if {"-h", "--help"} & set(args):
        print(__doc__)
        return
    work, big, repeat, args = parse_options(args)
    ensure_scenes(work, "valle_de_mexico", DEFAULT_WINDOW)
    if big:
        ensure_scenes(work, "big", BIG_WINDOW)
    steps = ["stacks", "read", "stage", "kernel", "stage-gm", "agreement", "quality"] + (["stage-big"] if big else [])
    repeated = ["read", "stage", "kernel", "stage-gm"]
    r, runs = run_steps(work, args, steps, repeated, repeat)
    report(r, runs, steps, repeated, big)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--step"]:
        print(json.dumps(run_step(argv[1], Path(argv[2]), argv[3:])))
    else:
        main(argv)

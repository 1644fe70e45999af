"""Benchmark: cost of the heavy stages against area, local and on a 2-worker Dask cluster.

    python benchmarks/bench_scaling.py [--sizes 1,4] [--with-16x] [--modes local,dask,dask-address]
                                       [--stages synth,mosaic,patches,predict] [--no-startup] [--workdir DIR]

For the default region (valle_de_mexico, a 60 km window on Mexico City: 3,600 cells) and
windows of 4x (120 km) and, with --with-16x, 16x (240 km) its area around the same
centre, in a temporary out_dir: builds the grid and labels (untimed), then times, each
in its own process,

  synth    period=2010 (the embedded default's scenes and truth), compute=local, then dask
  mosaic   period=2010, compute=local (2 threads), then compute=dask on a LocalCluster of 2
           process workers of 1 thread each: started by the stage ("dask": its start
           counted), and kept running by the benchmark ("dask-address":
           compute.address, warm workers, as with a persistent cluster)
  patches  patches.n_per_class = 1000 x the area factor, local then dask
  predict  period=2010 with the default region's model (data/valle_de_mexico/model), local
           then dask

and checks that each Dask output is the same bytes as the local one. Unless --no-startup,
each stage and mode first runs on a region of one tile (a 4 km window: 16 cells, 10 km
east of the default centre; patches.n_per_class=5): its start-up cost, paid once per run whatever the area
(interpreter, imports, config, inputs read whole such as the census, the model, the
cluster's start).

Prints, per stage, mode and size: wall seconds, cost per cell (patches: per cell cut,
the sample's patches plus those dropped for nodata, from patches_summary.json: a region
with fewer urban cells than asked caps the sample), peak memory (local: the stage's
process; Dask: the largest worker's, from the tasks' getrusage), then the growth
exponent of cost with area (slope of log cost against log cells: 1.0 is linear) of the
wall time, of the wall time less the start-up cost (also from each size to the next),
and of the tasks' busy time; the Dask/local wall time ratio at each size, the
peak memory per worker of each size against the default's, and the extrapolated wall
time for Mexico's 1,960,862 cells (one year of imagery, 20,000 patches per class as in
the pilot) on this machine and on a 32-worker cluster (busy seconds per cell of one
worker / 32: a lower bound).

Writes benchmarks/cost_per_cell.json (what `urbanmap plan` reads: per-cell figures of
the 4x region, or of the largest size when 4x was not run; stages not timed keep their
earlier figures) and <workdir>/bench_scaling.json (every figure). 16x is
benchmark-only: it takes about 16x the default region's time in each mode (tens of
minutes on a 2-core machine); `--sizes 1,16 --modes dask` runs only what the 16x memory
figure needs. On a shared machine timings are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CENTRE = (2800000, 829000)  # the default window's centre, EPSG:6372
SIDE = 60000  # the default window's side, m
STARTUP_OFFSET = (10000, 2000)  # m from the centre to the start-up region's centre
MEXICO_CELLS = 1_960_862
PILOT_PER_CLASS = 20_000
DASK = ["compute=dask", "compute.n_workers=2", "compute.threads_per_worker=1", "compute.memory_limit=4GiB"]
LOCAL = ["compute=local", "compute.threads=2"]
#: local; compute=dask with a LocalCluster started by each stage (its start is counted); and
#: compute=dask with compute.address of a LocalCluster that the benchmark keeps running
#: (a persistent cluster: warm workers, no start).
MODES = ("local", "dask", "dask-address")
OUTPUTS = {"synth": ("scenes/2010", "truth/2010"), "mosaic": ("mosaic_2010.tif",), "patches": ("patches.npz",),
           "predict": ("predictions/2010.parquet",)}


def window(factor: int, side: float = SIDE, centre=CENTRE) -> list[int]:
    half = side * math.sqrt(factor) / 2
    return [int(centre[0] - half), int(centre[1] - half), int(centre[0] + half), int(centre[1] + half)]


def stage(args: list[str], stats: Path | None = None) -> float:
    """Run `urbanmap <args>` from the project root; return its wall seconds."""
    env = {**os.environ}
    if stats is not None:
        stats.unlink(missing_ok=True)
        env["URBANMAP_TASK_STATS"] = str(stats)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "urbanmap", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"urbanmap {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return seconds


def digest(region: Path, st: str) -> str:
    """sha256 of a stage's outputs: its file, or every file (relative path and bytes)
    under its folders (synth: the scenes and the truth of 2010)."""
    import hashlib

    h = hashlib.sha256()
    for out in OUTPUTS[st]:
        path = region / out
        for f in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
            h.update(str(f.relative_to(region)).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(2**20), b""):
                    h.update(chunk)
    return h.hexdigest()


def task_stats(path: Path) -> dict:
    """Peak memory per process (MB) and busy seconds of the tasks recorded in `path`."""
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    peaks: dict[int, float] = {}
    for s in lines:
        peaks[s["pid"]] = max(peaks.get(s["pid"], 0.0), s["peak_rss_mb"])
    return {"tasks": len(lines), "busy_s": sum(s["seconds"] for s in lines),
            "peak_mb": max(peaks.values()) if peaks else None, "processes": len(peaks)}


def exponent(cells: list[int], seconds: list[float]) -> float | None:
    if len(cells) < 2:
        return None
    return float(np.polyfit(np.log(cells), np.log(seconds), 1)[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4", help="area factors, comma-separated (default 1,4)")
    parser.add_argument("--with-16x", action="store_true", help="add the 16x region (benchmark-only, long)")
    parser.add_argument("--workdir", default="/tmp/bench_scaling")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"modes of the timed stages, comma-separated (default {','.join(MODES)}; "
                             "the 16x region's memory per worker needs only dask)")
    parser.add_argument("--stages", default="synth,mosaic,patches,predict",
                        help="stages to time, comma-separated (each needs the ones before it to have run once "
                             "in the workdir)")
    parser.add_argument("--no-startup", action="store_true", help="skip the one-tile region (start-up costs)")
    parser.add_argument("--side", type=float, default=SIDE, help="side (m) of the 1x window (a smaller one: a smoke test)")
    parser.add_argument("--centre", default=",".join(map(str, CENTRE)), help="x,y of the windows' centre (EPSG:6372)")
    parser.add_argument("--tiles", default="",
                        help="overrides of every timed stage, e.g. 'compute.tile_size=16 predict.block_cells=16' "
                             "(default: none, the configured tiles of 32 cells: 4 mosaic tasks on the default "
                             "region, 16 on 4x, 64 on 16x; smaller tiles decode more source tiles twice, along "
                             "their borders)")
    return parser.parse_args(argv)


def time_stage(st: str, extra: list[str], units: int | None, common: list[str], region: Path, name: str, f: int,
               cells: int, work: Path, modes: list[str], address: list[str] | None, tiles: list[str]) -> list[dict]:
    """Time one stage on one region in every mode (each in its own process), print a line
    per mode and whether the modes wrote the same bytes; returns the rows (one per mode)."""
    rows = []
    written = {}
    for mode, opts in (("local", LOCAL), ("dask", DASK), ("dask-address", address)):
        if mode not in modes:
            continue
        stats = work / f"stats-{name}-{st}-{mode}.jsonl"  # kept: every task's seconds and peak
        seconds = stage([st, *common, *opts, *tiles, *extra], stats)
        if st == "patches":  # the cells cut: the same sample in every mode
            summary = json.loads((region / "patches_summary.json").read_text())
            units = summary["patches"] + summary["nodata_dropped"]
        row = {"size": f, "cells": cells, "stage": st, "mode": mode, "units": units, "wall_s": seconds,
               **task_stats(stats)}
        rows.append(row)
        # A digest, not the bytes: this process's memory would count in the next
        # stage's peak (Linux carries the parent's peak RSS across fork + exec).
        written[mode] = digest(region, st)
        print(f"  {st:7s} {mode:5s} {seconds:7.1f} s  {1e3 * seconds / units:7.2f} ms/unit  "
              f"peak {row['peak_mb'] or 0:6.0f} MB/process  ({row['tasks']} tasks)", flush=True)
    same = len(set(written.values())) == 1
    rows[-1]["same_bytes_as_local"] = same
    print(f"  {st:7s} outputs of {', '.join(written)}: {'the same bytes' if same else 'DIFFERENT'}", flush=True)
    return rows


def run_regions(args: argparse.Namespace, factors: list[int], modes: list[str], stages: list[str],
                address: list[str] | None) -> list[dict]:
    """Grid and labels (untimed) of each region (the start-up region, then each size),
    then each stage timed in each mode (time_stage); returns every row."""
    work = Path(args.workdir)
    centre = tuple(float(v) for v in args.centre.split(","))
    tiles = args.tiles.split()
    model = ROOT / "data" / "valle_de_mexico" / "model"
    rows = []
    # size 0: the start-up region, one tile of 16 cells (a 4 km window) 10 km east of the
    # default centre, where both labels occur (7 urban, 6 non-urban cells) for patches
    startup_centre = (centre[0] + STARTUP_OFFSET[0], centre[1] + STARTUP_OFFSET[1])
    regions = ([] if args.no_startup else [(0, "startup", window(1, 4000, startup_centre))])
    regions += [(f, f"scale{f}", window(f, args.side, centre)) for f in factors]
    for f, name, win in regions:
        common = [f"out_dir={work}", f"data.name={name}", f"data.window=[{','.join(map(str, win))}]", "period=2010"]
        region = work / name
        stage(["grid", *common])
        stage(["labels", *common])
        cells = int(__import__("pyarrow.parquet", fromlist=["x"]).read_metadata(region / "grid.parquet").num_rows)
        shutil.copytree(model, region / "model", dirs_exist_ok=True)
        per_class = 1000 * f if f else 5
        print(f"{name}: {cells:,} cells, window {win}", flush=True)
        for st, extra, units in (("synth", [], cells), ("mosaic", [], cells),
                                 ("patches", [f"patches.n_per_class={per_class}"], None), ("predict", [], cells)):
            if st in stages:
                rows += time_stage(st, extra, units, common, region, name, f, cells, work, modes, address, tiles)
    return rows


def growth(rows: list[dict], factors: list[int]) -> dict:
    """Per stage and mode: print the start-up cost and the cost per unit at each size;
    returns the growth exponents (of wall time, of wall time less the start-up cost, from
    each size to the next, of the tasks' busy time), the start-up costs, the Dask/local
    ratios by size and the peak memory per Dask worker by size."""
    print("\nstage    mode         start-up s " + "".join(f"{f:>4d}x: s/unit (ms)   " for f in factors))
    exps, net, steps, busy, by_size, memory, startup = {}, {}, {}, {}, {}, {}, {}
    for st in ("synth", "mosaic", "patches", "predict"):
        for mode in MODES:
            first = [r for r in rows if r["stage"] == st and r["mode"] == mode and r["size"] == 0]
            sel = [r for r in rows if r["stage"] == st and r["mode"] == mode and r["size"] > 0]
            if not sel:
                continue
            fixed = first[0]["wall_s"] if first else None
            print(f"{st:8s} {mode:12s} " + (f"{fixed:10.1f} " if first else f"{'-':>10s} ")
                  + "".join(f"{1e3 * r['wall_s'] / r['units']:>18.2f}   " for r in sel))
            exps[f"{st}/{mode}"] = exponent([r["units"] for r in sel], [r["wall_s"] for r in sel])
            if fixed is not None:
                startup[f"{st}/{mode}"] = fixed
                if all(r["wall_s"] > fixed for r in sel):
                    net[f"{st}/{mode}"] = exponent([r["units"] for r in sel], [r["wall_s"] - fixed for r in sel])
                    steps[f"{st}/{mode}"] = {f"{a['size']}x-{b['size']}x": exponent(
                        [a["units"], b["units"]], [a["wall_s"] - fixed, b["wall_s"] - fixed]) for a, b in zip(sel, sel[1:])}
            if all(r["busy_s"] for r in sel):  # the tasks alone: no process start, imports, cluster start
                busy[f"{st}/{mode}"] = exponent([r["units"] for r in sel], [r["busy_s"] for r in sel])
            if mode == "dask" and sel[0]["peak_mb"]:
                memory[st] = {r["size"]: r["peak_mb"] for r in sel}
        for mode in MODES[1:]:
            for f in factors:
                at = {r["mode"]: r["wall_s"] for r in rows if r["stage"] == st and r["size"] == f}
                if mode in at and "local" in at:
                    by_size.setdefault(f"{st}/{mode}", {})[f] = at[mode] / at["local"]
    return {"exponents": exps, "exponents_less_startup": net, "startup_s": startup, "exponents_busy": busy,
            "dask_over_local_by_size": by_size, "exponents_each_step": steps, "peak_mb_per_worker": memory}


def _print_exponents(title: str, exps: dict) -> None:
    print(title)
    for key, e in exps.items():
        print(f"  {key:20s} {e:.2f}" if e is not None else f"  {key:20s} (one size)")


def print_growth(g: dict, rows: list[dict], factors: list[int], modes: list[str], big: int) -> tuple[dict, dict]:
    """Print the growth exponents, the Dask/local ratios and the memory per worker;
    returns (the ratios on the `big` region per stage, those of the four stages' total)."""
    _print_exponents("\ngrowth exponent of wall time with area (target 1.0 +/- 0.1):", g["exponents"])
    _print_exponents("growth exponent of wall time less the start-up cost (the one-tile region's wall time):",
                     g["exponents_less_startup"])
    if len(factors) > 2:
        print("the same, from each size to the next:")
        for key, e in g["exponents_each_step"].items():
            print(f"  {key:20s} " + ", ".join(f"{k} {v:.2f}" for k, v in e.items()))
    _print_exponents("growth exponent of the tasks' busy seconds (fixed start-up costs left out):", g["exponents_busy"])
    by_size = g["dask_over_local_by_size"]
    ratios = {key: r[big] for key, r in by_size.items() if big in r}
    print(f"\nDask (2 workers x 1 thread) / local (2 threads) wall time on the {big}x region (target <= 1.15):")
    for key, r in ratios.items():
        print(f"  {key:22s} {r:.2f}")
    tiled = ("synth", "mosaic", "patches", "predict")
    local_big = sum(r["wall_s"] for r in rows if r["size"] == big and r["mode"] == "local" and r["stage"] in tiled)
    total = {m: sum(r["wall_s"] for r in rows if r["size"] == big and r["mode"] == m and r["stage"] in tiled) / local_big
             for m in MODES[1:] if local_big and m in modes}
    for m, t in total.items():
        print(f"  {'all four/' + m:22s} {t:.2f}")
    if len(factors) > 1:
        print("Dask / local wall time at each size (a fixed start-up cost weighs less as the area grows):")
        for key, r in by_size.items():
            print(f"  {key:22s} " + ", ".join(f"{f}x {v:.2f}" for f, v in r.items()))
    print("\npeak memory per Dask worker (MB) by size, and against the default region's:")
    for st, m in g["peak_mb_per_worker"].items():
        base = m.get(factors[0])
        print(f"  {st:8s} " + ", ".join(f"{f}x {v:.0f} ({v / base:.2f})" for f, v in m.items()))
    return ratios, total


def cost_per_cell(rows: list[dict], big: int, out: dict, cost_file: Path) -> dict:
    """Write the per-cell figures that `urbanmap plan` reads into `cost_file`, from the
    `big` region; the stages this run did not time keep their earlier figures."""
    earlier = json.loads(cost_file.read_text()).get("stages", {}) if cost_file.is_file() else {}
    costs = {"machine": out["machine"],
             "note": "local_s_per_cell: wall seconds per unit with compute=local (2 threads); worker_s_per_cell: busy "
                     "seconds per unit of one Dask worker of 1 thread (sum of task durations / units). Units: grid "
                     "cells (per year for synth, mosaic, predict), cells cut for patches.", "stages": {}}
    for st in OUTPUTS:
        sel = {r["mode"]: r for r in rows if r["stage"] == st and r["size"] == big}
        if not sel:
            if st in earlier:
                costs["stages"][st] = earlier[st]
            continue
        c = {"date": out["date"], "command": out["command"], "size": f"{big}x",
             "local_s_per_cell": sel["local"]["wall_s"] / sel["local"]["units"]}
        if "dask" in sel:
            c["worker_s_per_cell"] = sel["dask"]["busy_s"] / sel["dask"]["units"]
            c["dask_s_per_cell_2_workers"] = sel["dask"]["wall_s"] / sel["dask"]["units"]
        costs["stages"][st] = c
    cost_file.write_text(json.dumps(costs, indent=2) + "\n")
    return costs


def extrapolate(costs: dict) -> tuple[float, float]:
    """Print and return the wall seconds of Mexico's cells (one year, the pilot's patches)
    on this machine and on 32 workers (busy seconds per cell / 32: a lower bound)."""
    print(f"\nextrapolated to Mexico ({MEXICO_CELLS:,} cells, one year, {PILOT_PER_CLASS:,} patches per class):")
    local_total = cluster_total = 0.0
    for st, c in costs["stages"].items():
        units = 2 * PILOT_PER_CLASS if st == "patches" else MEXICO_CELLS
        here = units * c["local_s_per_cell"]
        local_total += here
        line = f"  {st:8s} this machine {here / 3600:8.1f} h"
        if "worker_s_per_cell" in c:
            w32 = units * c["worker_s_per_cell"] / 32
            cluster_total += w32
            line += f"; 32 workers {w32 / 3600:6.2f} h"
        else:
            cluster_total += here
            line += "; not tiled (one process, as on this machine)"
        print(line)
    print(f"  total    this machine {local_total / 3600:8.1f} h; 32 workers {cluster_total / 3600:6.2f} h")
    return local_total, cluster_total


def main() -> None:
    args = parse_args()
    factors = sorted({int(f) for f in args.sizes.split(",")} | ({16} if args.with_16x else set()))
    work = Path(args.workdir)
    modes = [m for m in MODES if m in args.modes.split(",")]
    stages = [st for st in OUTPUTS if st in args.stages.split(",")]
    work.mkdir(parents=True, exist_ok=True)
    model = ROOT / "data" / "valle_de_mexico" / "model"
    if not (model / "model_card.json").is_file():
        sys.exit(f"{model}: the default region's model is needed (dvc repro train)")

    # Only when timed: idle, its scheduler and two workers took ~12% of a core (ps, 40 min).
    persistent = address = None
    if "dask-address" in modes:
        from distributed import LocalCluster

        persistent = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, memory_limit="4GiB")
        address = ["compute=dask", f"compute.address={persistent.scheduler_address}", "compute.threads_per_worker=1"]
    rows = run_regions(args, factors, modes, stages, address)
    if persistent is not None:
        persistent.close()

    # --- figures ---
    out = {"machine": f"{platform.node()} ({os.cpu_count()} cores, shared with other jobs: noisy)",
           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "command": "python benchmarks/bench_scaling.py " + " ".join(sys.argv[1:]), "rows": rows}
    big = 4 if 4 in factors else factors[-1]  # the size of the overhead target and of the per-cell costs
    g = growth(rows, factors)
    ratios, total = print_growth(g, rows, factors, modes, big)
    if not {"local", "dask"} <= set(modes):
        out.update({"exponents": g["exponents"], "exponents_less_startup": g["exponents_less_startup"],
                    "startup_s": g["startup_s"], "exponents_busy": g["exponents_busy"], "dask_over_local": ratios,
                    "dask_over_local_by_size": g["dask_over_local_by_size"],
                    "exponents_each_step": g["exponents_each_step"], "peak_mb_per_worker": g["peak_mb_per_worker"]})
        (work / "bench_scaling.json").write_text(json.dumps(out, indent=2) + "\n")
        print(f"\n(per-cell costs and the Mexico extrapolation need the local and dask modes) -> {work / 'bench_scaling.json'}")
        return

    # Per-cell figures for `urbanmap plan`, from the 4x region when measured: the embedded
    # default's two scene footprints (185 x 180 km) cover it whole, but not the 16x region
    # (240 km a side: a fifth of its pixels has no scene, which synth then skips and
    # patches redraws). The stages this run did not time keep theirs (each stage says
    # when, how and on what size it was measured).
    costs = cost_per_cell(rows, big, out, ROOT / "benchmarks" / "cost_per_cell.json")
    local_total, cluster_total = extrapolate(costs)
    out.update({"exponents": g["exponents"], "exponents_less_startup": g["exponents_less_startup"],
                "startup_s": g["startup_s"], "exponents_busy": g["exponents_busy"],
                "dask_over_local": ratios, "dask_over_local_all": total,
                "dask_over_local_by_size": g["dask_over_local_by_size"], "exponents_each_step": g["exponents_each_step"],
                "peak_mb_per_worker": g["peak_mb_per_worker"], "costs": costs,
                "mexico_hours": {"this_machine": local_total / 3600, "workers_32": cluster_total / 3600}})
    (work / "bench_scaling.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n-> {ROOT / 'benchmarks' / 'cost_per_cell.json'}, {work / 'bench_scaling.json'}")


if __name__ == "__main__":
    main()

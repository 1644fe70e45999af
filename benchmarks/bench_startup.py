"""Benchmark: the fixed start-up costs of `patches` and `predict`, local and on Dask.

    python benchmarks/bench_startup.py [--repeats 2] [--workdir /tmp/bench_startup]

On the default region (valle_de_mexico: 3,600 cells, inputs copied from
data/valle_de_mexico/: grid.parquet, labels.parquet, mosaic_2010.tif, model/; nothing
is written there), measured in the same run:

  skops     `import skops.io` in a fresh interpreter, as skops does it by itself
            (baseline: scikit-learn's estimator discovery imports torch and dask.array)
            and through models.extra_trees.skops_io (the project's way); whether torch
            was imported, and the number of modules;
  load      models.load of the Extra Trees model in a fresh interpreter (what the
            stage's process, or each Dask worker, pays once);
  stages    `urbanmap predict period=2010` and `urbanmap patches` (n_per_class 1000),
            compute=local (2 threads) and compute=dask (a LocalCluster of 2 process
            workers of 1 thread, started by the stage), each in a fresh interpreter:
            wall seconds, seconds from the process start to the first finished tile, the
            busy seconds of each process's first task against its later ones (the
            imports and model load a worker pays on its first task), and Dask / local.

Each figure is the best of `--repeats` runs (alternating), as other jobs on a shared
machine make single timings noisy; say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGION = "valle_de_mexico"
INPUTS = ("grid.parquet", "labels.parquet", "mosaic_2010.tif", "model")
MODES = {"local": ["compute=local", "compute.threads=2"],
         "dask": ["compute=dask", "compute.n_workers=2", "compute.threads_per_worker=1", "compute.memory_limit=4GiB"]}
STAGES = {"predict": ["period=2010"], "patches": ["patches.n_per_class=1000"]}

IMPORT = """
import sys, time
start = time.perf_counter()
{body}
print(time.perf_counter() - start, 'torch' in sys.modules, len(sys.modules))
"""
SKOPS = {
    "skops (plain import)": "import skops.io",
    "skops (skops_io)": "from urbanmap.training.models.extra_trees import skops_io; skops_io()",
    "models.load": "from urbanmap import models; models.load({model!r})",
}


def fresh(code: str) -> tuple[float, bool, int]:
    """(seconds, torch imported, modules) of `code` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", IMPORT.format(body=code)], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), out[1] == "True", int(out[2])


def stage(name: str, mode: str, out_dir: Path, stats: Path) -> dict:
    """Run one stage in a fresh interpreter; its wall time and task timeline."""
    stats.unlink(missing_ok=True)
    env = {**os.environ, "URBANMAP_TASK_STATS": str(stats)}
    args = [sys.executable, "-m", "urbanmap", name, f"out_dir={out_dir}", *MODES[mode], *STAGES[name]]
    began, start = time.time(), time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    tasks = [json.loads(line) for line in stats.read_text().splitlines()]
    by_pid: dict[int, list[dict]] = {}
    for t in sorted(tasks, key=lambda t: t["start"]):
        by_pid.setdefault(t["pid"], []).append(t)
    first = [ts[0]["seconds"] for ts in by_pid.values()]
    later = [t["seconds"] for ts in by_pid.values() for t in ts[1:]]
    return {"wall_s": wall, "first_tile_s": min(t["end"] for t in tasks) - began, "tasks": len(tasks),
            "first_task_s": max(first), "later_task_mean_s": sum(later) / len(later) if later else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/bench_startup")
    args = parser.parse_args()
    work = Path(args.workdir)
    region = work / REGION
    region.mkdir(parents=True, exist_ok=True)
    source = ROOT / "data" / REGION
    for name in INPUTS:
        if not (source / name).exists():
            sys.exit(f"{source / name}: needed (dvc repro)")
        if (source / name).is_dir():
            shutil.copytree(source / name, region / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source / name, region / name)

    print(f"fresh interpreter, best of {args.repeats}:")
    imports = {}
    for _ in range(args.repeats):
        for label, code in SKOPS.items():
            got = fresh(code.format(model=str(region / "model")))
            if label not in imports or got[0] < imports[label][0]:
                imports[label] = got
    for label, (seconds, torch, modules) in imports.items():
        print(f"  {label:22s} {seconds:6.2f} s  torch {'imported' if torch else 'not imported':12s} {modules:5d} modules")
    base, ours = imports["skops (plain import)"][0], imports["skops (skops_io)"][0]
    print(f"  skops_io / plain import: {ours / base:.2f}")

    rows: dict[tuple[str, str], dict] = {}
    for _ in range(args.repeats):
        for name in STAGES:
            for mode in MODES:
                got = stage(name, mode, work, work / "stats.jsonl")
                if (name, mode) not in rows or got["wall_s"] < rows[name, mode]["wall_s"]:
                    rows[name, mode] = got
    print(f"\nstages on {REGION} (best of {args.repeats} by wall time):")
    print("  stage    mode    wall s  first tile s  tasks  first task s  later tasks s (mean)")
    for (name, mode), r in rows.items():
        later = f"{r['later_task_mean_s']:.2f}" if r["later_task_mean_s"] is not None else "-"
        print(f"  {name:8s} {mode:6s} {r['wall_s']:6.2f}  {r['first_tile_s']:12.2f}  {r['tasks']:5d}  "
              f"{r['first_task_s']:12.2f}  {later:>8s}")
    for name in STAGES:
        print(f"  {name:8s} dask / local wall: {rows[name, 'dask']['wall_s'] / rows[name, 'local']['wall_s']:.2f}")
    result = {"machine": f"{os.uname().nodename} ({os.cpu_count()} cores, shared: noisy)", "repeats": args.repeats,
              "imports": {k: {"seconds": v[0], "torch": v[1], "modules": v[2]} for k, v in imports.items()},
              "stages": {f"{n}/{m}": r for (n, m), r in rows.items()}}
    (work / "bench_startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n-> {work / 'bench_startup.json'}")


if __name__ == "__main__":
    main()

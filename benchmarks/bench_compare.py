"""Benchmark: `urbanmap compare` over six configurations of the default region's size.

    python benchmarks/bench_compare.py [--cells 2000] [--repeats 3]

Six cv_predictions.parquet files are written in a temporary folder, as `urbanmap train`
writes them: {three models} x {kfold, spatial}, 2,000 cells, 10 folds, one repeat, each
model right on about 95% of the cells (its errors drawn at random, so that the tests
have work to do). The figure is the wall time of the whole command (reading, fold
scores, 2,000 bootstrap resamples per run, 30 pair rows, report and plot); the baseline
is the same command over the first two files only, in the same run. Target: < 60 s for
the six.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from urbanmap.cli import main


def write_run(folder: Path, model: str, cv: str, cells: int, seed: int) -> Path:
    """A cv_predictions.parquet of `cells` cells, 10 folds, the model right on ~95%."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(cells // 2, np.int64), np.ones(cells - cells // 2, np.int64)]
    order = np.random.default_rng(42 if cv == "kfold" else 43).permutation(cells)
    fold = np.empty(cells, np.int64)
    fold[order] = np.arange(cells) % 10
    wrong = rng.random(cells) < 0.05
    pred = np.where(wrong, 1 - y, y)
    frame = pd.DataFrame({"fold": fold, "cell_id": [f"E{c:04d}N0001" for c in range(cells)], "y_true": y,
                          "p_urban": pred.astype(float), "y_pred": pred, "repeat": np.zeros(cells, np.int64)})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**table.schema.metadata, b"urbanmap:cv": json.dumps(
        {"model": model, "cv": cv, "n_splits": 10, "repeats": 1, "seed": 42}).encode()})
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "cv_predictions.parquet")
    return folder


def timed(folders: list[Path], out: Path) -> float:
    start = time.perf_counter()
    assert main(["compare", *map(str, folders), "--out", str(out)]) == 0
    return time.perf_counter() - start


def bench(cells: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = [write_run(root / f"{m}-{cv}", m, cv, cells, k)
                   for k, (m, cv) in enumerate((m, cv) for m in ("extra_trees", "lenet", "random_forest")
                                               for cv in ("kfold", "spatial"))]
        six = min(timed(folders, root / f"out6-{r}") for r in range(repeats))
        two = min(timed(folders[:2], root / f"out2-{r}") for r in range(repeats))
    print(f"compare, 6 runs of {cells:,} cells: {six:.2f} s (target < 60 s); 2 runs: {two:.2f} s; "
          f"ratio 6/2: {six / two:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench(args.cells, args.repeats)

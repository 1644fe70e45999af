"""Step `validate interpret`: the reference class of each sampled cell -> `interpreted.csv`.

With `validation.interpreter: simulated` (the embedded default) the simulated interpreter
fills sample.csv's ref_class with the synthetic generator's true class of each cell
(truth/<periods.target>/cells.parquet), flipping a share `validation.interpreter_error` of
the sampled cells (chosen from the seed) to another class. With `human`, the answers of
people come from validation/human.csv, which `urbanmap interpret export` writes from the
web app's adjudicated answers: checked against today's sample.csv (the same cells, the
same strata and map classes; ref_class urban or non_urban) and copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from omegaconf import DictConfig

from urbanmap.core import io
from urbanmap.core.errors import InputError
from urbanmap.validation.sample import MAP_CLASSES
from urbanmap.validation.settings import ValidationSettings

#: Tag that separates the interpreter's random stream from the others derived from the seed.
_INTERPRETER = 606


def simulate_interpreter(truth: ArrayLike, error: float, classes: Sequence[str], seed: int) -> np.ndarray:
    """Reference classes from a simulated interpreter: the true class, except for
    round(error x n) units (chosen from the seed) labelled with another of `classes`
    (the next one, cyclically, after a random step: with two classes, the other one).

    Returns (n,) object array."""
    values = np.asarray(truth, dtype=object)
    names = list(classes)
    if not 0 <= error <= 1:
        raise InputError(f"validation.interpreter_error: {error} is not in [0, 1]")
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InputError(f"truth: class '{unknown[0]}' is not one of {', '.join(names)}")
    rng = np.random.default_rng([int(seed), _INTERPRETER])
    n = values.size
    flip = rng.permutation(n)[: int(round(error * n))]
    out = values.copy()
    if len(names) > 1 and flip.size:
        index = pd.Index(names).get_indexer(pd.Index(values[flip]))
        step = rng.integers(1, len(names), flip.size)
        out[flip] = np.asarray(names, dtype=object)[(index + step) % len(names)]
    return out


def read_sample_cells(path: Path) -> pd.DataFrame:
    """sample.csv as strings (cell_id, ref_class kept as written); InputError naming the
    file when it is missing or lacks cell_id."""
    sample_path = io.require_file(path, "validation sample")
    sample = pd.read_csv(sample_path, dtype={"cell_id": str, "ref_class": str}, keep_default_na=False)
    if "cell_id" not in sample.columns:
        raise InputError(f"{sample_path}: sample lacks column cell_id")
    return sample


def true_classes(cell_id: pd.Series, truth_path: Path, year: int | str) -> pd.Series:
    """The synthetic truth's class of each cell (aligned with `cell_id`); InputError naming
    the truth file when it is missing or lacks a cell."""
    if not truth_path.is_file():
        raise InputError(f"{truth_path}: no synthetic truth of {year}; the simulated interpreter needs "
                         f"`urbanmap synth period={year}` (with real imagery, fill ref_class by hand)")
    truth, _, _ = io.read_cells(truth_path, f"truth of {year}", ["cell_id", "true_class"])
    true_class = cell_id.map(truth.set_index("cell_id")["true_class"])
    if true_class.isna().any():
        raise InputError(f"{truth_path}: no truth for cell {cell_id[true_class.isna()].iloc[0]}")
    return true_class


def human_answers(sample: pd.DataFrame, human_path: Path) -> pd.DataFrame:
    """The rows of the exported answers at `human_path`, in sample order, checked against
    `sample` (sample.csv as strings); InputError naming the file when it is missing, lacks
    a column, holds a cell that is not the sample's (or whose stratum or map class
    differs), repeats a cell, or has a ref_class other than urban or non_urban."""
    if not human_path.is_file():
        raise InputError(f"{human_path}: no exported answers; with validation.interpreter=human, run "
                         "`urbanmap interpret export` first")
    human = pd.read_csv(io.require_file(human_path, "exported answers"), dtype=str, keep_default_na=False)
    missing = [c for c in sample.columns if c not in human.columns]
    if missing:
        raise InputError(f"{human_path}: answers lack column(s) {', '.join(missing)}")
    repeated = human["cell_id"][human["cell_id"].duplicated()]
    if len(repeated):
        raise InputError(f"{human_path}: cell {repeated.iloc[0]} appears twice")
    keys = [c for c in ("sample_id", "cell_id", "stratum", "map_class") if c in sample.columns]
    known = set(map(tuple, sample[keys].to_numpy().tolist()))
    foreign = [row for row in map(tuple, human[keys].to_numpy().tolist()) if row not in known]
    if foreign:
        raise InputError(f"{human_path}: cell {foreign[0][keys.index('cell_id')]} is not one of sample.csv's as it is now "
                         "(the sample changed since the export? export again)")
    bad = human["ref_class"][~human["ref_class"].isin(MAP_CLASSES)]
    if len(bad):
        raise InputError(f"{human_path}: ref_class {bad.iloc[0]!r} is not {' or '.join(MAP_CLASSES)}")
    order = pd.Series(range(len(sample)), index=sample["cell_id"])
    answered = sample[sample["cell_id"].isin(human["cell_id"])].copy()
    answered["ref_class"] = answered["cell_id"].map(human.set_index("cell_id")["ref_class"])
    return answered.sort_values("cell_id", key=lambda s: s.map(order)).reset_index(drop=True)


def run_interpret(cfg: DictConfig) -> pd.DataFrame:
    """Step `validate interpret`: sample.csv + synthetic truth (or the exported answers)
    -> interpreted.csv."""
    settings = ValidationSettings.from_config(cfg)
    target, error = settings.target_period, settings.interpreter_error
    if settings.interpreter == "human":
        sample = pd.read_csv(io.require_file(settings.sample, "validation sample"), dtype=str, keep_default_na=False)
        answered = human_answers(sample, settings.human)
        with io.atomic_output(settings.interpreted) as tmp:
            answered.to_csv(tmp, index=False)
        print(f"validate interpret ({target}): {len(answered)} of {len(sample)} sample cells answered by interpreters "
              f"({settings.human}) -> {settings.interpreted}")
        return answered
    sample = read_sample_cells(settings.sample)
    true_class = true_classes(sample["cell_id"], settings.truth, target)
    sample["ref_class"] = simulate_interpreter(true_class.to_numpy(), error, MAP_CLASSES, settings.seed)
    with io.atomic_output(settings.interpreted) as tmp:
        sample.to_csv(tmp, index=False)
    wrong = int((sample["ref_class"] != true_class).sum())
    print(f"validate interpret ({target}): {len(sample)} cells labelled from the synthetic truth, "
          f"{wrong} flipped (interpreter_error {error:g}) -> {settings.interpreted}")
    return sample

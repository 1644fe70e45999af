"""What `urbanmap compare` compares: the out-of-fold predictions of earlier `train` runs.

A RUN argument names one of:

- a result folder holding ``cv_predictions.parquet`` (``data/valle_de_mexico``, or
  ``<out_dir>/<region>`` of a run with another out_dir), or that file itself;
- a DVC experiment (a name ``dvc exp show`` lists): its ``dvc.lock`` gives the MD5 of
  ``cv_predictions.parquet``, read from the DVC cache (``dvc exp run`` puts it there);
- an MLflow parent run id (32 hex digits) of ``urbanmap evaluate``, which logs the
  predictions as ``evaluation/cv_predictions.parquet``;
- ``sweep:<name>``: every DVC experiment whose ``tracking.sweep`` is <name> (`make sweep`).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from urbanmap.core.errors import InputError
from urbanmap.training.evaluate import read_predictions

PREDICTIONS = "cv_predictions.parquet"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Experiment:
    """One configuration's cross-validation.

    Attributes:
        label: the RUN argument as given.
        model, cv: model.name and the CV scheme (kfold, spatial) from the file's metadata.
        features: the model's feature groups (`patch` for a network; empty if the file
            does not say).
        seed: the seed of its folds (None if the file does not say).
        predictions: one row per cell and repeat: repeat, fold, cell_id, y_true, y_pred
            (0/1, 1 = urban).
    """

    label: str
    model: str
    cv: str
    features: tuple[str, ...]
    seed: int | None
    predictions: pd.DataFrame

    @property
    def name(self) -> str:
        """`<model>-<cv>`, as the MLflow run is named."""
        return f"{self.model}-{self.cv}"

    @property
    def repeats(self) -> int:
        """Number of repeats of the split."""
        return int(self.predictions["repeat"].nunique())

    @property
    def folds(self) -> int:
        """Folds per repeat."""
        return int(self.predictions["fold"].nunique())

    @property
    def cells(self) -> int:
        """Cells scored."""
        return int(self.predictions["cell_id"].nunique())


def from_file(label: str, path: Path) -> Experiment:
    """An Experiment from a cv_predictions.parquet (InputError naming it if unusable)."""
    frame, meta = read_predictions(path)
    if "repeat" not in frame:
        frame = frame.assign(repeat=0)
    keep = frame[["repeat", "fold", "cell_id", "y_true", "y_pred"]].astype({"repeat": "int64", "fold": "int64"})
    seed = meta.get("seed")
    return Experiment(label, str(meta.get("model", "model")), str(meta.get("cv", "cv")),
                      tuple(str(f) for f in meta.get("features", ())),
                      int(seed) if seed is not None else None, keep.reset_index(drop=True))


def _git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def from_dvc_experiment(name: str, root: Path) -> Experiment | None:
    """The experiment `name`'s predictions from the DVC cache, or None if no experiment
    has that name (InputError if it has but its predictions are not in the cache)."""
    refs = [r for r in _experiment_refs(root) if r.endswith(f"/{name}")]
    if not refs:
        return None
    lock = yaml.safe_load(_git("show", f"{refs[0]}:dvc.lock", cwd=root) or "{}") or {}
    outs = [o for stage in (lock.get("stages") or {}).values() for o in stage.get("outs", [])
            if str(o.get("path", "")).endswith(PREDICTIONS)]
    if not outs:
        raise InputError(f"{name}: the DVC experiment's dvc.lock has no {PREDICTIONS} (was train run in it?)")
    md5 = str(outs[0]["md5"])
    cached = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if not cached.is_file():
        raise InputError(f"{name}: {outs[0]['path']} (md5 {md5}) is not in the DVC cache; `dvc pull` it or run the experiment here")
    return from_file(name, cached)


def _experiment_refs(root: Path) -> list[str]:
    """The refs of finished experiments, refs/exps/<baseline commit, split 2/rest>/<name>;
    not DVC's own bookkeeping beside them, one level shallower (refs/exps/celery/failed
    points at a failed run's workspace)."""
    refs = _git("for-each-ref", "--format=%(refname)", "refs/exps", cwd=root).split()
    return [r for r in refs if len(r.split("/")) == 5]


def sweep_members(name: str, root: Path) -> list[str]:
    """Names of the DVC experiments whose params.yaml sets tracking.sweep to `name`,
    in the order git lists their refs; InputError if there is none."""
    members = []
    for ref in _experiment_refs(root):
        params = yaml.safe_load(_git("show", f"{ref}:params.yaml", cwd=root) or "{}") or {}
        if str((params.get("tracking") or {}).get("sweep")) == name:
            members.append(ref.rsplit("/", 1)[-1])
    if not members:
        raise InputError(f"sweep:{name}: no DVC experiment has tracking.sweep={name} (dvc exp ls lists them)")
    return members


def from_mlflow_run(run_id: str, tracking_uri: str) -> Experiment:
    """The predictions logged with MLflow run `run_id` (InputError if it has none)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, f"evaluation/{PREDICTIONS}", tmp)
        except Exception as exc:  # MLflow raises several types for a missing run or artifact
            raise InputError(f"{run_id}: no evaluation/{PREDICTIONS} in MLflow run at {tracking_uri}: "
                             f"{exc}".splitlines()[0]) from None
        return from_file(run_id, Path(local))


def resolve(run: str, root: Path, tracking_uri: str | None) -> Experiment:
    """The Experiment a RUN argument names (see the module docstring)."""
    path = Path(run)
    if path.is_dir() and (path / PREDICTIONS).is_file():
        return from_file(run, path / PREDICTIONS)
    if path.is_file():
        return from_file(run, path)
    if path.is_dir():
        raise InputError(f"{run}: no {PREDICTIONS} in this folder (run `urbanmap train` with out_dir= pointing here)")
    experiment = from_dvc_experiment(run, root)
    if experiment is not None:
        return experiment
    if _RUN_ID.match(run) and tracking_uri:
        return from_mlflow_run(run, tracking_uri)
    raise InputError(f"{run}: not a result folder with {PREDICTIONS}, a DVC experiment or an MLflow run id")


def load_all(runs: list[str], root: Path, tracking_uri: str | None) -> list[Experiment]:
    """The Experiments of `runs` (a `sweep:<name>` expanded to its members); InputError
    for fewer than two or for a repeated RUN."""
    runs = [member for r in runs for member in (sweep_members(r[len("sweep:"):], root) if r.startswith("sweep:") else [r])]
    if len(runs) < 2:
        raise InputError(f"compare: needs at least two runs to compare, got {len(runs)}")
    duplicated = sorted({r for r in runs if runs.count(r) > 1})
    if duplicated:
        raise InputError(f"compare: {duplicated[0]} is given twice")
    return [resolve(r, root, tracking_uri) for r in runs]


def short_label(label: str) -> str:
    """A RUN label as a name shows it: a path's last two parts (`out_a/valle_de_mexico`)."""
    parts = Path(label).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else label


def display_names(experiments: list[Experiment]) -> list[str]:
    """Unique short names: `<model>-<cv>`; where runs of that name differ in feature
    groups, those added (`<model>[band_stats+texture]-<cv>`), and where names still
    clash, the RUN's short label."""
    features_of: dict[str, set[tuple[str, ...]]] = {}
    for e in experiments:
        features_of.setdefault(e.name, set()).add(e.features)
    names = [f"{e.model}[{'+'.join(e.features)}]-{e.cv}" if len(features_of[e.name]) > 1 else e.name
             for e in experiments]
    return [f"{n} ({short_label(e.label)})" if names.count(n) > 1 else n for e, n in zip(experiments, names, strict=True)]


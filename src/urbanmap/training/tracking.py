"""MLflow tracking of a train/evaluate run.

One *parent* run per evaluation, named ``<model>-<cv>``, in the experiment
``tracking.experiment``:

- params: the whole composed config, flattened to dotted keys (``model.estimator.n_estimators``);
- metrics: the mean over folds of every metric under its plain name (``urban_f1``,
  ``overall_accuracy``, ``macro_f1``, ...), the standard deviation as ``<name>_std`` and
  the pooled out-of-fold value as ``pooled_<name>``;
- artifacts: metrics.json, the plot CSVs, the report, figures and per-fold table under
  ``evaluation/``, and the final model folder under ``model/`` (skops or safetensors +
  JSON and its card), registered as a new version of ``tracking.registered_model``
  (default ``urbanmap-<region>-<model>``).

One *child* run per fold (``fold-<k>``, tag ``mlflow.parentRunId``) with that fold's
metrics under the same plain names.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``tracking.uri`` (default
``sqlite:///mlflow.db`` in the project root, with artifacts in ``mlruns/`` beside it).
A tracking failure (server down, bad URI) never fails the stage: it is reported as one
warning and the DVC metrics files stand. HTTP stores are given
``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=tracking.timeout_s``
unless those variables are already set.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackingSettings:
    """The `tracking` config section, read once by the evaluate stage.

    Attributes:
        uri: the store: MLFLOW_TRACKING_URI when set, else tracking.uri.
        experiment: tracking.experiment, the MLflow experiment's name.
        registered_model: tracking.registered_model, or None for
            ``urbanmap-<region>-<model>``.
        timeout_s: tracking.timeout_s, seconds an HTTP store may take per request.
        sweep: tracking.sweep, a name shared by the parent runs of one sweep (tag
            ``sweep``), or None.
        params: the whole composed config, flattened to dotted keys (the parent run's params).
    """

    uri: str
    experiment: str
    registered_model: str | None = None
    timeout_s: int = 5
    sweep: str | None = None
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrackingSettings | None:
        """The settings, or None when the config has no `tracking` or tracking.enabled is false."""
        t = cfg.get("tracking")
        if t is None or not t.get("enabled", True):
            return None
        registered = t.get("registered_model")
        return cls(
            uri=tracking_uri(str(t.uri)), experiment=str(t.experiment), registered_model=str(registered) if registered else None,
            timeout_s=int(t.get("timeout_s", 5) or 5), sweep=str(t.sweep) if t.get("sweep") else None,
            params=flatten(OmegaConf.to_container(cfg, resolve=True)),
        )


def tracking_uri(configured: str) -> str:
    """MLFLOW_TRACKING_URI if set, else `configured` (tracking.uri)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> {"a.b.c": "value"}; lists and scalars become their string."""
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = str(tree)
    return out


def _artifact_location(uri: str) -> str | None:
    """For a SQLite store, ``mlruns/`` beside the database file (MLflow's default is the
    working directory); None for other stores (the server decides)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()
    return None


def log_experiment(settings: TrackingSettings, summary: dict[str, Any], meta: dict[str, Any],
                   artifacts: Iterable[str | os.PathLike[str]], model_dir: str | os.PathLike[str],
                   dataset: dict[str, str] | None = None) -> str | None:
    """Log the parent run, per-fold child runs, artifacts and the registered model;
    return the parent run id, or None (with one warning) if tracking failed. `dataset`
    (the patches file's path and MD5, from train) becomes the run's training input."""
    uri = settings.uri
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.timeout_s))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine
    state: dict[str, Any] = {"client": None, "run_id": None}
    try:
        return _log(settings, summary, meta, artifacts, Path(model_dir), state, dataset)
    except Exception as exc:  # any tracking failure must leave the stage's results standing
        if state["client"] is not None and state["run_id"] is not None:
            try:
                state["client"].set_terminated(state["run_id"], "FAILED")
            except Exception:  # the store is gone; nothing more to tidy
                pass
        reason = (str(exc).splitlines() or [""])[0][:200]
        log.warning(
            f"warning: MLflow tracking at {uri} failed, run not logged ({type(exc).__name__}: {reason}); "
            f"the metrics are in the DVC outputs only"
        )
        return None


def _log(settings: TrackingSettings, summary: dict[str, Any], meta: dict[str, Any],
         artifacts: Iterable[str | os.PathLike[str]], model_dir: Path, state: dict[str, Any],
         dataset: dict[str, str] | None = None) -> str:
    """The runs of log_experiment; `state` gets the client and parent run id as soon as
    the parent exists (so a failure can mark it FAILED)."""
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):  # MLflow sets INFO on import; keep the stage's output short
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = settings.uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    exp_id = (experiment.experiment_id if experiment
              else client.create_experiment(settings.experiment, artifact_location=_artifact_location(uri)))
    # model training, not GenAI: MLflow 3's UI then opens the experiment on its runs
    client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
    tags = {"region": meta["region"], "model": meta["model"], "cv": meta["cv"], "stage": "urbanmap evaluate"}
    if settings.sweep:
        tags["sweep"] = settings.sweep
    parent = client.create_run(exp_id, run_name=f"{meta['model']}-{meta['cv']}", tags=tags)
    state.update(client=client, run_id=parent.info.run_id)
    pid = parent.info.run_id
    _log_params(client, pid, settings.params)
    if dataset:
        _log_dataset(client, pid, dataset)
    _log_metrics(client, exp_id, pid, tags, summary)
    for path in artifacts:
        client.log_artifact(pid, str(path), artifact_path="evaluation")
    client.log_artifacts(pid, str(model_dir), artifact_path="model")
    registered = settings.registered_model or f"urbanmap-{meta['region']}-{meta['model']}"
    _register_model(client, pid, registered, f"{parent.info.artifact_uri}/model", tags)
    client.set_terminated(pid)
    return str(pid)


def _log_dataset(client: Any, run_id: str, dataset: dict[str, str]) -> None:
    """The patches file as the run's training dataset: its DVC path as the source and its
    MD5 (dvc.lock's) as the digest, so the run names the exact data it was fitted on."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # MLflow registers the local-file source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(dataset["path"])
    meta_dataset: Any = MetaDataset  # concrete at run time; its stubs leave `profile` abstract
    entity = meta_dataset(source, name=Path(dataset["path"]).name, digest=dataset["md5"])._to_mlflow_entity()
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])])


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    """The flattened config as the run's params (values cut to MLflow's 6,000 characters)."""
    from mlflow.entities import Param

    batch = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(batch), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=batch[i : i + 100])


def _log_metrics(client: Any, exp_id: str, parent_id: str, tags: dict[str, str], summary: dict[str, Any]) -> None:
    """One child run per fold with its metrics, then the parent's mean, `<name>_std` and
    `pooled_<name>` metrics."""
    from mlflow.entities import Metric

    def metrics(d: dict[str, Any], prefix: str = "", suffix: str = "") -> list[Metric]:
        return [Metric(f"{prefix}{k}{suffix}", float(v), 0, 0) for k, v in d.items()]

    for k, row in summary["folds"].iterrows():
        repeat, fold = k if isinstance(k, tuple) else (0, k)
        name = f"repeat-{repeat}-fold-{fold}" if isinstance(k, tuple) else f"fold-{fold}"
        child = client.create_run(exp_id, run_name=name, tags={**tags, "mlflow.parentRunId": parent_id,
                                                               "fold": str(fold), "repeat": str(repeat)})
        client.log_batch(child.info.run_id, metrics=metrics(row.to_dict()))
        client.set_terminated(child.info.run_id)
    client.log_batch(parent_id, metrics=metrics(summary["mean"]) + metrics(summary["std"], suffix="_std")
                     + metrics(summary["pooled"], prefix="pooled_"))


def _register_model(client: Any, run_id: str, name: str, source: str, tags: dict[str, str]) -> None:
    """A new version of registered model `name` (created if new) from `source`, tagged on the run."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
    client.set_tag(run_id, "registered_model", f"{name}/{version.version}")

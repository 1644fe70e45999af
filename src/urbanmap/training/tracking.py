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
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def tracking_uri(cfg) -> str:
    """MLFLOW_TRACKING_URI if set, else tracking.uri."""
    return os.environ.get("MLFLOW_TRACKING_URI") or str(cfg.tracking.uri)

def flatten(tree, prefix: str = "") -> dict[str, str]:
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

def log_experiment(cfg, summary: dict, meta: dict, artifacts, model_dir) -> str | None:
    """Log the parent run, per-fold child runs, artifacts and the registered model;
    return the parent run id, or None (with one warning) if tracking failed."""
    uri = tracking_uri(cfg)
    timeout = int(cfg.tracking.get("timeout_s", 5) or 5)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine
    state = {"client": None, "run_id": None}
    try:
        return _log(uri, cfg, summary, meta, artifacts, Path(model_dir), state)
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

def _log(uri: str, cfg, summary: dict, meta: dict, artifacts, model_dir: Path, state: dict) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    for name in ("mlflow", "alembic"):  # MLflow sets INFO on import; keep the stage's output short
        logging.getLogger(name).setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = str(cfg.tracking.experiment)
    experiment = client.get_experiment_by_name(name)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(name, artifact_location=_artifact_location(uri))
    tags = {"region": meta["region"], "model": meta["model"], "cv": meta["cv"], "stage": "urbanmap evaluate"}
    parent = client.create_run(exp_id, run_name=f"{meta['model']}-{meta['cv']}", tags=tags)
    state.update(client=client, run_id=parent.info.run_id)
    pid = parent.info.run_id

    params = [Param(k, v[:6000]) for k, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(pid, params=params[i : i + 100])

    def metrics(d: dict, prefix: str = "", suffix: str = "") -> list[Metric]:
        return [Metric(f"{prefix}{k}{suffix}", float(v), 0, 0) for k, v in d.items()]

    for k, row in summary["folds"].iterrows():
        child = client.create_run(exp_id, run_name=f"fold-{k}", tags={**tags, "mlflow.parentRunId": pid, "fold": str(k)})
        client.log_batch(child.info.run_id, metrics=metrics(row.to_dict()))
        client.set_terminated(child.info.run_id)
    client.log_batch(pid, metrics=metrics(summary["mean"]) + metrics(summary["std"], suffix="_std")
                     + metrics(summary["pooled"], prefix="pooled_"))

    for path in artifacts:
        client.log_artifact(pid, str(path), artifact_path="evaluation")
    client.log_artifacts(pid, str(model_dir), artifact_path="model")
    registered = cfg.tracking.get("registered_model") or f"urbanmap-{meta['region']}-{meta['model']}"
    try:
        client.create_registered_model(registered)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(registered, source=f"{parent.info.artifact_uri}/model", run_id=pid, tags=tags)
    client.set_tag(pid, "registered_model", f"{registered}/{version.version}")
    client.set_terminated(pid)
    return pid

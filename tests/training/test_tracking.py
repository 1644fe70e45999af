"""MLflow tracking: parent and per-fold child runs, artifacts, the registered model; a
SQLite store, an unreachable server (one warning, results stand) and a real server."""

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from helpers import synthetic
from helpers.project import REPO
from urbanmap.core import config, paths
from urbanmap.training import evaluate
from urbanmap.training.tracking import TrackingSettings


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    synthetic.trained_region(root)
    return root


def tracked_cfg(root, *extra):
    return config.load(REPO, [*synthetic.overrides(root, "tiny", *synthetic.FAST["extra_trees"]), "tracking.enabled=true", *extra])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_logged(uri: str, cfg, local_artifacts: bool = True):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("urbanmap")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 4
    parent = parents[0]
    children = sorted((r for r in runs if r is not parent), key=lambda r: int(r.data.tags["fold"]))
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.info.run_name == "extra_trees-kfold" and parent.info.status == "FINISHED"

    metrics = json.loads(paths.metrics(cfg).read_text())
    per_fold = pd.read_csv(paths.evaluation_dir(cfg) / "per_fold.csv")
    for name in ("urban_precision", "urban_recall", "urban_f1", "non_urban_precision", "non_urban_recall",
                 "non_urban_f1", "overall_accuracy", "macro_f1", "weighted_f1"):
        assert parent.data.metrics[name] == pytest.approx(metrics["mean"][name], abs=1e-6)
        assert parent.data.metrics[f"{name}_std"] == pytest.approx(metrics["std"][name], abs=1e-6)
        assert [c.data.metrics[name] for c in children] == pytest.approx(per_fold[name].tolist(), abs=1e-6)
    assert parent.data.params["model.name"] == "extra_trees" and parent.data.params["cv.n_splits"] == "3"
    assert parent.data.params["model.estimator.n_estimators"] == "20"

    model_files = {os.path.basename(a.path) for a in client.list_artifacts(parent.info.run_id, "model")}
    assert model_files == {"model.skops", "model_card.json"}
    evaluation = {os.path.basename(a.path) for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {"metrics.json", "report.md", "confusion.png", "confusion.csv", "roc.csv"} <= evaluation
    versions = client.search_model_versions("name='urbanmap-tiny-extra_trees'")
    assert [v.run_id for v in versions] == [parent.info.run_id]

    # the run names the exact data it was fitted on: the patches file's path and MD5
    patches = paths.patches(cfg)
    inputs = client.get_run(parent.info.run_id).inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name == "patches.npz"
    assert inputs[0].dataset.digest == hashlib.md5(patches.read_bytes()).hexdigest()
    assert json.loads(inputs[0].dataset.source)["uri"] == str(patches)
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on runs
    return client, parent


def test_settings_are_read_once_with_the_environment_first(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert TrackingSettings.from_config(config.load(REPO, ["tracking.enabled=false"])) is None
    cfg = config.load(REPO, ["tracking.uri=sqlite:///elsewhere.db", "tracking.registered_model=maps"])
    settings = TrackingSettings.from_config(cfg)
    assert settings is not None and settings.uri == "sqlite:///elsewhere.db" and settings.registered_model == "maps"
    assert settings.params["cv.n_splits"] == "10" and settings.params["model.estimator._target_"].endswith("ExtraTreesClassifier")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert TrackingSettings.from_config(cfg).uri == "http://127.0.0.1:5000"


def test_runs_in_a_sqlite_store(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tracked_cfg(trained, f"tracking.uri={uri}", "tracking.sweep=zoo-2026-12")
    evaluate.run(cfg)
    _, parent = check_logged(uri, cfg)
    assert parent.data.tags["sweep"] == "zoo-2026-12"
    assert parent.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())  # beside the store
    assert (tmp_path / "mlruns").is_dir()


def test_an_unreachable_server_costs_one_warning(trained, monkeypatch, capsys, caplog, in_repo):
    from urbanmap.cli import main

    port = free_port()  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    args = [*synthetic.overrides(trained, "tiny", *synthetic.FAST["extra_trees"]), "tracking.enabled=true", "tracking.timeout_s=2"]
    metrics = trained / "tiny" / "metrics.json"
    metrics.unlink(missing_ok=True)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", *args]) == 0
    out, err = capsys.readouterr()
    assert not err.strip(), err
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].startswith(f"warning: MLflow tracking at http://127.0.0.1:{port} failed"), lines
    assert "metrics are in the DVC outputs only" in lines[0]
    assert json.loads(metrics.read_text())["mean"]["overall_accuracy"] > 0.5
    assert "MLflow run" not in out
    assert time.monotonic() - start < 60  # no long retry loop (MLflow's default retries for minutes)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on a free local port, stopped after the test."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_runs_on_a_real_tracking_server(trained, mlflow_server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = tracked_cfg(trained)
    evaluate.run(cfg)
    _, parent = check_logged(mlflow_server, cfg)
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = {p.name for p in (tmp_path / "artifacts").rglob("*") if p.is_file()}
    assert {"model.skops", "model_card.json", "report.md"} <= stored  # through the server, into its store

"""`urbanmap compare` on real train runs of the tiny region: the files, the refused
pairs, the ranking and gaps; bad runs."""

import shutil

import pandas as pd
import pytest

from helpers import synthetic
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config
from urbanmap.examples import tiny
from urbanmap.training import patches, train

RUNS = {  # folder -> overrides of its train run (same patches)
    "et": ["model.estimator.n_estimators=20"],
    "lr": ["model=logistic_regression"],
    "et_spatial": ["model.estimator.n_estimators=20", "cv=spatial", "cv.n_splits=3", "cv.block_size=4000"],
    "et_seed7": ["model.estimator.n_estimators=20", "seed=7"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four train runs of the tiny region, each in its own out_dir."""
    root = tmp_path_factory.mktemp("compare")
    tiny.make_region(root / "et")
    patches.run(config.load(REPO, synthetic.overrides(root / "et")))
    for name, extra in RUNS.items():
        if name != "et":
            shutil.copytree(root / "et" / "tiny", root / name / "tiny")
        train.run(config.load(REPO, synthetic.overrides(root / name, "tiny", *extra)))
    return root


def compare(runs, capsys, *names, out="out"):
    status = main(["compare", *(str(runs / n / "tiny") for n in names), "--out", str(runs / out)])
    return status, capsys.readouterr()


def test_compare_writes_the_tables_the_report_and_the_plot(runs, capsys, in_repo):
    status, captured = compare(runs, capsys, "et", "lr", "et_spatial", "et_seed7")
    assert status == 0, captured.err
    out = runs / "out"
    assert sorted(p.name for p in out.iterdir()) == ["experiments.csv", "gaps.csv", "intervals.png", "pairs.csv",
                                                    "ranking.csv", "report.md"]
    table = pd.read_csv(out / "experiments.csv")
    assert len(table) == 4 and (table["cells"] == 200).all() and (table["folds"] == 3).all()
    for m in ("overall_accuracy", "macro_f1", "urban_f1", "non_urban_precision"):
        assert (table[f"{m}_low"] <= table[m]).all() and (table[m] <= table[f"{m}_high"]).all()
        assert (table[f"pooled_{m}_low"] <= table[f"pooled_{m}"]).all()
    pairs = pd.read_csv(out / "pairs.csv").fillna({"refused_reason": ""})
    assert {"p_corrected_t", "p_mcnemar", "p_holm", "significant", "refused_reason"} <= set(pairs.columns)
    assert len(pairs) == 6 * 2  # every pair, overall accuracy and macro F1
    oa = pairs[pairs["metric"] == "overall_accuracy"].set_index(["a", "b"])
    same = oa.loc[("extra_trees-kfold (et/tiny)", "logistic_regression-kfold")]
    assert same["refused_reason"] == "" and 0 <= same["p_corrected_t"] <= 1 and same["test"] == "corrected t"
    spatial = oa.xs("extra_trees-spatial", level="b").iloc[0]
    assert spatial["refused_reason"].startswith("different CV schemes") and spatial["test"] == "McNemar"
    seeded = oa.loc[oa.index.get_level_values("b").str.contains("et_seed7")].iloc[0]
    assert seeded["refused_reason"].startswith("different seeds (42 and 7)")
    assert (oa["p_holm"] >= oa["p_tested"] - 1e-12).all() and oa["p_holm"].max() <= 1
    ranking = pd.read_csv(out / "ranking.csv")
    assert ranking["rank"].tolist() == [1, 2, 3, 4] and ranking["overall_accuracy"].is_monotonic_decreasing
    assert ranking["group"].str.len().min() >= 1
    gaps = pd.read_csv(out / "gaps.csv")
    # the seed-42 kfold run against the spatial one, not the seed-7 run
    assert gaps["model"].tolist() == ["extra_trees"] and gaps["kfold"].tolist() == ["extra_trees-kfold (et/tiny)"]
    report = (out / "report.md").read_text()
    assert "## Ranking (overall accuracy)" in report and "different seeds" in report
    assert (out / "intervals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_gap_of_random_and_spatial_cv(runs, capsys, in_repo):
    status, captured = compare(runs, capsys, "et", "et_spatial", out="gap")
    assert status == 0, captured.err
    gaps = pd.read_csv(runs / "gap" / "gaps.csv")
    table = pd.read_csv(runs / "gap" / "experiments.csv").set_index("cv")
    assert gaps["model"].tolist() == ["extra_trees"] and gaps["features"].tolist() == ["flat"]
    expected = table.loc["kfold", "overall_accuracy"] - table.loc["spatial", "overall_accuracy"]
    assert gaps["gap"].iloc[0] == pytest.approx(expected, abs=1e-5)
    assert gaps["ci_low"].iloc[0] < gaps["gap"].iloc[0] < gaps["ci_high"].iloc[0]


def test_same_inputs_same_bytes(runs, capsys, in_repo):
    for out in ("b1", "b2"):
        assert compare(runs, capsys, "et", "lr", out=out)[0] == 0
    for name in ("experiments.csv", "pairs.csv", "ranking.csv", "report.md", "intervals.png"):
        assert (runs / "b1" / name).read_bytes() == (runs / "b2" / name).read_bytes(), name


@pytest.mark.parametrize("args, message", [
    (["et"], "compare: needs at least two runs to compare, got 1"),
    (["et", "nowhere"], "nowhere: not a result folder with cv_predictions.parquet, a DVC experiment or an MLflow run id"),
    (["et", "empty"], "empty: no cv_predictions.parquet in this folder"),
    (["et", "et"], "is given twice"),
    (["et", "columns"], "lacks column(s) y_pred"),
])
def test_bad_runs_are_one_line_errors_and_nothing_is_written(runs, capsys, in_repo, args, message):
    (runs / "empty").mkdir(exist_ok=True)
    (runs / "columns").mkdir(exist_ok=True)
    pd.read_parquet(runs / "et" / "tiny" / "cv_predictions.parquet").drop(columns="y_pred").to_parquet(
        runs / "columns" / "cv_predictions.parquet")
    items = [str(runs / a) if a not in ("nowhere",) and a != "et" else (str(runs / "et" / "tiny") if a == "et" else a)
             for a in args]
    assert main(["compare", *items, "--out", str(runs / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (runs / "bad").exists()


def test_an_mlflow_run_id_is_a_run(runs, capsys, in_repo, monkeypatch):
    from mlflow import MlflowClient

    from urbanmap.training import evaluate

    uri = f"sqlite:///{runs / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    evaluate.run(config.load(REPO, [*synthetic.overrides(runs / "lr", "tiny", *RUNS["lr"]), "tracking.enabled=true"]))
    client = MlflowClient(tracking_uri=uri)
    parent = [r for r in client.search_runs([client.get_experiment_by_name("urbanmap").experiment_id])
              if "mlflow.parentRunId" not in r.data.tags][0]
    assert main(["compare", str(runs / "et" / "tiny"), parent.info.run_id, "--out", str(runs / "ml")]) == 0
    table = pd.read_csv(runs / "ml" / "experiments.csv")
    assert table["run"].tolist()[1] == parent.info.run_id and table["model"].tolist() == ["extra_trees", "logistic_regression"]
    capsys.readouterr()


def test_dvc_experiments_and_a_sweep_are_runs(runs, tmp_path):
    """A DVC experiment is found by its name among refs/exps; its dvc.lock gives the MD5
    of cv_predictions.parquet, read from the DVC cache; `sweep:<name>` is every
    experiment whose params.yaml sets tracking.sweep to <name>."""
    import hashlib
    import subprocess

    from urbanmap.comparison import runs as run_args
    from urbanmap.core.errors import InputError

    repo = tmp_path / "project"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "ci@example.org")
    git("config", "user.name", "ci")
    for name, folder, sweep in (("exp-et", "et", "s1"), ("exp-lr", "lr", "s1"), ("exp-other", "et_seed7", "s2")):
        data = (runs / folder / "tiny" / "cv_predictions.parquet").read_bytes()
        md5 = hashlib.md5(data).hexdigest()
        cached = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(data)
        (repo / "dvc.lock").write_text(f"schema: '2.0'\nstages:\n  train:\n    outs:\n    - path: data/tiny/cv_predictions.parquet\n"
                                       f"      md5: {md5}\n")
        (repo / "params.yaml").write_text(f"tracking:\n  sweep: {sweep}\n")
        git("add", "dvc.lock", "params.yaml")
        git("commit", "-qm", name)
        git("update-ref", f"refs/exps/ab/cdef0123/{name}", "HEAD")
    git("update-ref", "refs/exps/celery/failed", "HEAD~1")  # DVC's pointer to a failed queued run, of sweep s1
    found = run_args.load_all(["sweep:s1"], repo, None)
    assert [(e.label, e.model) for e in found] == [("exp-et", "extra_trees"), ("exp-lr", "logistic_regression")]
    assert run_args.resolve("exp-other", repo, None).seed == 7
    with pytest.raises(InputError, match="sweep:s3: no DVC experiment has tracking.sweep=s3"):
        run_args.load_all(["sweep:s3"], repo, None)
    for cached in (repo / ".dvc" / "cache").rglob("*"):
        if cached.is_file():
            cached.unlink()
    with pytest.raises(InputError, match=r"exp-et: data/tiny/cv_predictions.parquet \(md5 \w+\) is not in the DVC cache"):
        run_args.resolve("exp-et", repo, None)


def test_names_tell_apart_feature_groups_then_runs():
    """Two runs of one model and scheme are named by their feature groups (as a sweep
    over feature groups gives), and by their RUN where those are the same too."""
    from urbanmap.comparison.runs import Experiment, display_names

    def run(label, features, cv="kfold"):
        return Experiment(label, "extra_trees", cv, features, 42, pd.DataFrame())

    names = display_names([run("a", ("band_stats",)), run("b", ("band_stats", "texture")),
                           run("out_x/r/c", ("flat",)), run("out_y/r/d", ("flat",)), run("e", ("flat",), "spatial")])
    assert names == ["extra_trees[band_stats]-kfold", "extra_trees[band_stats+texture]-kfold",
                     "extra_trees[flat]-kfold (r/c)", "extra_trees[flat]-kfold (r/d)", "extra_trees-spatial"]
    assert display_names([run("a/b/c", ("flat",)), run("a/b/d", ("flat",))]) == ["extra_trees-kfold (b/c)",
                                                                                 "extra_trees-kfold (b/d)"]

"""`dvc repro` in a clone: idempotent, and reruns exactly what a change touches."""

import yaml

from dvcproject import make_clone, sh, stages_run


def set_params(clone, **changes):
    """Edit params.yaml as `dvc exp run -S` would (dotted keys)."""
    params = yaml.safe_load((clone / "params.yaml").read_text())
    for key, value in changes.items():
        node = params
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_reruns_only_what_changed(tmp_path, shared_data):
    clone = make_clone(tmp_path)
    first = stages_run(sh("dvc", "repro", cwd=clone).stdout)
    assert first[:2] == ["grid", "labels"] and first[-1] == "evaluate"
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout) == []  # nothing reruns

    set_params(clone, **{"model.estimator.n_estimators": 30})
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout) == ["train", "evaluate"]

    set_params(clone, **{"labels.urban_fraction.urban_min": 0.6})
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout)[:1] == ["labels"]
    assert "grid" not in stages_run(sh("dvc", "repro", cwd=clone).stdout)

    set_params(clone, **{"data.window": [2808000, 831000, 2814000, 838000]})
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout)[:2] == ["grid", "labels"]

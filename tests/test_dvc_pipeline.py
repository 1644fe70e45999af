"""`dvc repro` in a clone: idempotent, and reruns exactly what a change touches."""

import os
import signal
import subprocess
import time

import pytest
import yaml

from helpers.dvcproject import make_clone, sh, stages_run

pytestmark = pytest.mark.slow  # DVC and end-to-end runs: `make test` only


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
    assert first[:2] == ["grid", "labels"] and first[-1] == "sdg"
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout) == []  # nothing reruns

    # A period added to the list (both lists, as `dvc exp run -S periods.list=...`
    # composes them): its own synth, mosaic and predict, and the stages that read every
    # period's map or the list (series, validate_periods, sdg); no other period's stage.
    periods = yaml.safe_load((clone / "params.yaml").read_text())["periods"]["list"]
    added = [*periods[:2], "2017", *periods[2:]]
    set_params(clone, **{"periods.list": added, "data.inputs.synth_periods": added})
    status = sh("dvc", "status", cwd=clone).stdout
    assert {line[:-1] for line in status.splitlines() if line.endswith(":") and not line[0].isspace()} == {
        "synth@2017", "mosaic@2017", "predict@2017", "series", "validate_periods", "sdg"}, status
    set_params(clone, **{"periods.list": periods, "data.inputs.synth_periods": periods})
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout) == []

    set_params(clone, **{"model.estimator.n_estimators": 30})
    rerun = stages_run(sh("dvc", "repro", cwd=clone).stdout)
    assert rerun[:2] == ["train", "evaluate"]  # then the maps that the new model makes
    assert not {"grid", "labels", "synth@2010", "mosaic@2010", "patches"} & set(rerun)

    set_params(clone, **{"labels.urban_fraction.urban_min": 0.6})
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout)[:1] == ["labels"]
    assert "grid" not in stages_run(sh("dvc", "repro", cwd=clone).stdout)

    set_params(clone, **{"data.window": [2808000, 831000, 2814000, 838000]})
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout)[:2] == ["grid", "labels"]


def lock_outs(clone) -> dict[str, str]:
    """md5 of every stage output recorded in dvc.lock, by path."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def test_two_clones_reproduce_every_output_byte_for_byte(tmp_path, shared_data):
    """The whole pipeline run twice, in two clones at different paths with their own DVC
    caches: every tracked output (model files, maps, metrics, GeoPackage, PNGs) has the
    same md5, so the two dvc.lock files are identical."""
    first, second = (make_clone(tmp_path / name) for name in ("first", "second"))
    for clone in (first, second):
        sh("dvc", "repro", cwd=clone)
    outs = lock_outs(first)
    assert len(outs) > 30 and any(path.endswith("/model") for path in outs)
    assert outs == lock_outs(second)
    assert (first / "dvc.lock").read_text() == (second / "dvc.lock").read_text()


def test_killed_repro_leaves_no_output_and_a_rerun_finishes_it(tmp_path, shared_data):
    """SIGKILL to `dvc repro` and its stage while the stage writes its output folder:
    the output is absent (never half-written), and the next `dvc repro` completes with the
    same outputs as an uninterrupted run. The killed run's hidden temporaries are not
    outputs (io removes them the next time the stage itself runs: test_io)."""
    clone = make_clone(tmp_path)
    sh("dvc", "repro", cwd=clone)
    reference = lock_outs(clone)
    scenes = clone / "data" / "small" / "scenes"

    repro = subprocess.Popen(["dvc", "repro", "--force", "--no-run-cache"], cwd=clone, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(scenes.glob(".2010.tmp-*/*/*.TIF")):  # synth@2010 is writing scenes
            assert repro.poll() is None and time.monotonic() < deadline, "synth@2010 never started writing"
            time.sleep(0.05)
    finally:
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait()
    assert not (scenes / "2010").exists()
    status = sh("dvc", "status", cwd=clone).stdout
    assert "changed" in status or "deleted" in status, status

    sh("dvc", "repro", cwd=clone)
    assert lock_outs(clone) == reference
    assert "up to date" in sh("dvc", "status", cwd=clone).stdout
    assert not any(".tmp-" in path for path in lock_outs(clone))


def test_hand_edited_lock(tmp_path, shared_data):
    """A dvc.lock edited by hand: a wrong checksum makes DVC rerun that stage (same
    outputs); a broken file is refused with a message naming dvc.lock; nothing is lost."""
    clone = make_clone(tmp_path)
    sh("dvc", "repro", cwd=clone)
    reference = lock_outs(clone)
    lock = clone / "dvc.lock"
    good = lock.read_text()

    md5 = reference["data/small/labels.parquet"]
    lock.write_text(good.replace(md5, "f" * 32))
    status = sh("dvc", "status", cwd=clone).stdout
    assert "labels:" in status and "modified" in status
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout)[:1] == ["labels"]
    assert lock_outs(clone) == reference

    lock.write_text(good.replace("outs:", "outs: [", 1))
    result = sh("dvc", "repro", cwd=clone, check=False)
    assert result.returncode != 0 and "dvc.lock" in result.stderr, result.stderr
    assert all((clone / path).exists() for path in reference)

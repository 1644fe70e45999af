"""Adding one period to the default's list: what `dvc repro` reruns, and its cost against
one period's synth + mosaic + predict, measured in the same run.

    python benchmarks/bench_add_period.py [PERIOD]    # default 2017; after `make run`

On a repository whose pipeline is up to date (`dvc status` clean), it adds PERIOD to
periods.list and data.inputs.synth_periods in params.yaml (as `dvc exp run -S` composes
them), prints `dvc status`'s stages, then runs synth@PERIOD, mosaic@PERIOD and
predict@PERIOD one by one (`dvc repro --no-run-cache --single-item`, each timed: the
baseline; without the run cache, which would restore a period run before) and
`dvc repro` for everything else that reruns (the series, validation and SDG stages),
and prints both times and their ratio. Then it puts params.yaml and dvc.lock back,
removes PERIOD's outputs and restores the others from the DVC cache (`dvc checkout`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OWN_STAGES = ("synth", "mosaic", "predict")


def dvc(*args: str) -> str:
    """Run `dvc args` in the repository; its stdout (a failure stops the benchmark)."""
    return subprocess.run(["dvc", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def timed(*args: str) -> tuple[float, str]:
    """(seconds, stdout) of `dvc args`."""
    start = time.perf_counter()
    out = dvc(*args)
    return time.perf_counter() - start, out


def stages_in(status: str) -> list[str]:
    """The stages `dvc status` lists (lines `name:` at the left margin)."""
    return [line[:-1] for line in status.splitlines() if line.endswith(":") and not line[0].isspace()]


def main(period: str) -> dict:
    if stages_in(dvc("status")):
        raise SystemExit("the pipeline is not up to date: run `make run` (dvc repro) first")
    params_path, lock_path = REPO / "params.yaml", REPO / "dvc.lock"
    params_text, lock_text = params_path.read_text(), lock_path.read_text()
    params = yaml.safe_load(params_text)
    listed = [str(p) for p in params["periods"]["list"]]
    if period in listed:
        raise SystemExit(f"period {period} is already in periods.list")
    added = sorted([*listed, period], key=lambda p: (p[:4], p))
    params["periods"]["list"] = added
    params["data"]["inputs"]["synth_periods"] = added
    region = REPO / params["out_dir"] / params["data"]["name"]
    try:
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        status = stages_in(dvc("status"))
        own = {}
        for stage in OWN_STAGES:
            own[stage], _ = timed("repro", "--no-run-cache", "--single-item", f"{stage}@{period}")
        rest_s, out = timed("repro", "--no-run-cache")
        rest = re.findall(r"Running stage '([^']+)'", out)
    finally:
        params_path.write_text(params_text)
        lock_path.write_text(lock_text)
        for path in (region / "scenes" / period, region / "truth" / period):
            shutil.rmtree(path, ignore_errors=True)
        for path in [*region.glob(f"mosaic_{period}.*"), *(region / "predictions").glob(f"{period}.*")]:
            path.unlink()
        dvc("checkout", "--force")
        # DVC's autostage added the run's dvc.lock to git's index: take it out again
        subprocess.run(["git", "reset", "-q", "--", "dvc.lock", "params.yaml"], cwd=REPO, check=False)
    baseline = sum(own.values())
    result = {
        "period": period, "dvc_status_stages": status, "rerun_after_own_stages": rest,
        "own_stages_s": {k: round(v, 1) for k, v in own.items()}, "baseline_s": round(baseline, 1),
        "add_period_s": round(baseline + rest_s, 1), "ratio": round((baseline + rest_s) / baseline, 3),
        "target_ratio": 1.5,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "2017")

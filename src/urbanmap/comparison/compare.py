"""`urbanmap compare RUN [RUN ...] [--out DIR] [key=value ...]`: which configuration is
better, and by how much, with intervals and paired tests (stats, analysis).

Writes into DIR (default ``<region_dir>/comparison/``), replaced whole:

- ``experiments.csv``: one row per RUN: model, cv, seed, folds, repeats, cells and, per
  metric, the fold mean with its Nadeau-Bengio interval (``<metric>_low|high``) and the
  pooled out-of-fold score with its cell-bootstrap interval (``pooled_<metric>...``);
- ``pairs.csv``: one row per pair and metric (overall accuracy, macro F1): ``diff``
  (a - b) with ``ci_low|high``, ``t``, ``p_corrected_t``, McNemar's ``only_a_right``,
  ``only_b_right``, ``p_mcnemar``, ``p_tested`` (the test used), ``p_holm``,
  ``significant`` and ``refused_reason`` (why the t-test could not be run);
- ``ranking.csv``, ``gaps.csv`` (random minus spatial CV per model), ``report.md`` and
  ``intervals.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from urbanmap.comparison import analysis, runs
from urbanmap.core import config, paths
from urbanmap.core.io import atomic_directory
from urbanmap.training.tracking import tracking_uri

#: Bootstrap resamples of the pooled intervals and their seed (fixed: same inputs, same bytes).
RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def command(args: argparse.Namespace) -> None:
    """Run `urbanmap compare` from the parsed arguments."""
    overrides = [i for i in args.items if "=" in i]
    run_args = [i for i in args.items if "=" not in i]
    cfg = config.load(".", overrides)
    out = Path(args.out) if args.out else paths.region_dir(cfg) / "comparison"
    uri = tracking_uri(str(cfg.tracking.uri)) if cfg.get("tracking") else None
    experiments = runs.load_all(run_args, Path("."), uri)
    written = compare(experiments, out)
    print(f"compare: {len(experiments)} runs, {written['pairs']} pairs, best {written['best']} -> {out / 'report.md'}")


def compare(experiments: list[runs.Experiment], out: Path) -> dict[str, Any]:
    """The analysis of `experiments`, written into `out` (replaced whole)."""
    names = runs.display_names(experiments)
    scores = [analysis.fold_scores(e) for e in experiments]
    table = analysis.experiment_rows(experiments, names, scores, RESAMPLES, BOOTSTRAP_SEED)
    pairs = analysis.pair_rows(experiments, names, scores)
    ranked = analysis.ranking(table, pairs)
    gaps = analysis.spatial_gaps(experiments, names, scores)
    with atomic_directory(out) as tmp:
        for frame, name in ((table, "experiments.csv"), (pairs, "pairs.csv"), (ranked, "ranking.csv"), (gaps, "gaps.csv")):
            frame.to_csv(tmp / name, index=False, lineterminator="\n", float_format="%.6g")
        (tmp / "report.md").write_text(report(table, pairs, ranked, gaps), encoding="utf-8")
        plot(ranked, tmp / "intervals.png")
    return {"pairs": len(pairs) // len(analysis.PAIRED), "best": ranked["experiment"].iloc[0]}


def _f(value: Any, digits: int = 4) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def _p(value: Any) -> str:
    return "" if pd.isna(value) else ("< 0.0001" if value < 1e-4 else f"{value:.4f}")


def report(table: pd.DataFrame, pairs: pd.DataFrame, ranked: pd.DataFrame, gaps: pd.DataFrame) -> str:
    """report.md: the ranking, the experiments' intervals, the pairs, the gaps."""
    lines = ["# Model comparison", "",
             "Fold means with 95% intervals corrected for overlapping training sets (Nadeau & Bengio 2003); "
             "pooled out-of-fold scores with 95% cell-bootstrap intervals. Pairs: corrected resampled t-test where "
             "both runs have the same folds, McNemar's test on the cells both scored otherwise; Holm's correction "
             "over all pairs of a metric. Configurations sharing a letter are not significantly different.", "",
             "## Ranking (overall accuracy)", "", "| rank | experiment | OA | 95% interval | group |", "|---|---|---|---|---|"]
    lines += [f"| {r['rank']} | {r['experiment']} | {_f(r['overall_accuracy'])} | {_f(r['overall_accuracy_low'])} - "
              f"{_f(r['overall_accuracy_high'])} | {r['group']} |" for _, r in ranked.iterrows()]
    lines += ["", "## Experiments", "", "| experiment | folds x repeats | cells | OA (pooled, bootstrap 95%) | macro F1 | "
              "urban P / R / F1 | non-urban P / R / F1 |", "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        urban = " / ".join(_f(r[f"urban_{m}"]) for m in ("precision", "recall", "f1"))
        rural = " / ".join(_f(r[f"non_urban_{m}"]) for m in ("precision", "recall", "f1"))
        lines.append(f"| {r['experiment']} | {r['folds']} x {r['repeats']} | {r['cells']:,} | {_f(r['pooled_overall_accuracy'])} "
                     f"({_f(r['pooled_overall_accuracy_low'])} - {_f(r['pooled_overall_accuracy_high'])}) | "
                     f"{_f(r['macro_f1'])} ({_f(r['macro_f1_low'])} - {_f(r['macro_f1_high'])}) | {urban} | {rural} |")
    lines += ["", "## Pairs", "", "| a | b | metric | a - b | 95% interval | test | p | p (Holm) | significant | note |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in pairs.iterrows():
        lines.append(f"| {r['a']} | {r['b']} | {r['metric']} | {_f(r['diff'])} | {_f(r['ci_low'])} - {_f(r['ci_high'])} | "
                     f"{r['test']} | {_p(r['p_tested'])} | {_p(r['p_holm'])} | {'yes' if r['significant'] else 'no'} | "
                     f"{r['refused_reason'] or ''} |")
    if len(gaps):
        lines += ["", "## Random minus spatial cross-validation (overall accuracy)", "",
                  "| model | features | gap | 95% interval |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['features']} | {_f(r['gap'])} | {_f(r['ci_low'])} - {_f(r['ci_high'])} |"
                  for _, r in gaps.iterrows()]
    return "\n".join(lines) + "\n"


def plot(ranked: pd.DataFrame, path: Path) -> None:
    """intervals.png: each experiment's overall accuracy and interval, best on top, with its group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ranked)
    fig, ax = plt.subplots(figsize=(6, 0.45 * n + 1.2))
    y = list(range(n))[::-1]
    mean, low, high = (ranked[c].to_numpy() for c in ("overall_accuracy", "overall_accuracy_low", "overall_accuracy_high"))
    ax.errorbar(mean, y, xerr=[mean - low, high - mean], fmt="o", capsize=3)
    ax.set_yticks(y, [f"{e}  [{g}]" for e, g in zip(ranked["experiment"], ranked["group"], strict=True)], fontsize=8)
    ax.set_xlabel("overall accuracy, fold mean and corrected 95% interval")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)

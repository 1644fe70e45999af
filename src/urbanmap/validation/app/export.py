"""`urbanmap interpret export`: the interpreters' answers into the pipeline.

Writes validation/human.csv: sample.csv's rows and columns (interpreted.csv's format),
`ref_class` filled with the answer that counts for each cell (quality.resolve: the
adjudicator's, else the interpreters' common answer), for the cells whose answer is
urban or non_urban. Left out, and counted in the printed report and in
validation/human_qa.json: "cannot tell" cells, open disagreements, cells not answered
yet, and the gold cells (never part of the sample). With validation.interpreter=human,
`urbanmap validate interpret` (the dvc stage validate_interpret) turns human.csv into
interpreted.csv, and `validate estimate` and `sdg` follow.

Dropping cells leaves the estimators of each stratum on its answered cells: unbiased if
the cells left out are like the others of their stratum. The report says how many there
are, so that a reviewer can judge.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from urbanmap.core import io
from urbanmap.core.errors import InputError
from urbanmap.validation.app import quality
from urbanmap.validation.app.store import Store, file_hash
from urbanmap.validation.settings import ValidationSettings


def open_for_export(settings: ValidationSettings) -> Store:
    """The answers' database, read-only, checked against today's sample.csv; InputError
    naming the database when it is missing, or the sample when it changed since."""
    if not settings.database.exists():
        raise InputError(f"{settings.database}: answers' database not found; interpreters answer in "
                         "`urbanmap interpret serve` first")
    store = Store.open(settings.database, write=False)
    check_sample(store, settings.sample)
    return store


def check_sample(store: Store, sample: Path) -> str:
    """The sample's SHA-256; InputError when it is not the one the database was made from."""
    sample = io.require_file(sample, "validation sample")
    now = file_hash(sample)
    then = store.meta.get("sample_sha256", "")
    if now != then:
        raise InputError(f"{sample}: changed since the answers' database {store.path} was made from it (SHA-256 "
                         f"{then[:12]}… then, {now[:12]}… now); restore it, or move the database aside to start afresh")
    return now


def export_table(sample: pd.DataFrame, current: pd.DataFrame, adjudicated: pd.Series,
                 gold_cells: set[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """sample.csv's rows (strings, as read) with ref_class set, for the cells whose
    answer counts and is urban or non_urban, and the counts of what was left out.

    Args:
        sample: sample.csv as strings (with cell_id and ref_class).
        current: latest answers (interpreter, cell_id, answer, gold).
        adjudicated: adjudicated answers by cell_id.
        gold_cells: the gold cells' ids.
    """
    on_sample = current[~current["cell_id"].isin(gold_cells)]
    resolved = quality.resolve(sample["cell_id"].tolist(), on_sample, adjudicated)
    keep = resolved["answer"].isin(("urban", "non_urban")).to_numpy()
    out = sample[keep].copy()
    out["ref_class"] = resolved.loc[keep, "answer"].to_numpy()
    sources = resolved["source"].value_counts()
    counts = {
        "sample_cells": len(sample), "exported": int(keep.sum()),
        "cannot_tell": int((resolved["answer"] == "cannot_tell").sum()),
        "disagreements_open": int(sources.get("disagreement", 0)), "unanswered": int(sources.get("unanswered", 0)),
        "gold_answers_left_out": int(current["cell_id"].isin(gold_cells).sum()),
        "by_source": {str(k): int(v) for k, v in sources.items()},
    }
    return out, counts


def qa_report(current: pd.DataFrame, gold: pd.Series) -> dict[str, Any]:
    """Agreement per pair and gold scores, as plain values for JSON."""
    pairs = quality.pair_agreement(current)
    scores = quality.gold_scores(current, gold)
    return {
        "pairs": [{k: (None if v is None or (isinstance(v, float) and v != v) else v) for k, v in r.items()}
                  for r in pairs.to_dict("records")],
        "gold": scores.to_dict("records"),
    }


def run_export(settings: ValidationSettings, out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Step `interpret export`: the database -> validation/human.csv (or `out`) and
    human_qa.json; prints what was exported and left out. InputError when no cell has an
    urban or non-urban answer yet."""
    store = open_for_export(settings)
    sample = pd.read_csv(settings.sample, dtype=str, keep_default_na=False)
    items = store.items()
    gold = items.loc[items["gold_answer"].notna()].set_index("cell_id")["gold_answer"]
    current = store.current_answers()
    table, counts = export_table(sample, current, store.adjudicated(), set(gold.index))
    if table.empty:
        raise InputError(f"{store.path}: no sample cell has an urban or non-urban answer yet; nothing exported")
    target = Path(out) if out is not None else settings.human
    with io.atomic_output(target) as tmp:
        table.to_csv(tmp, index=False)
    report = {"database": str(store.path), "sample_file": str(settings.sample), "sample_sha256": store.meta["sample_sha256"],
              "export": str(target), **counts, **qa_report(current, gold)}
    io.write_json(settings.human_qa if out is None else target.with_suffix(".qa.json"), report)
    print(f"interpret export: {counts['exported']} of {counts['sample_cells']} sample cells -> {target}; left out: "
          f"{counts['cannot_tell']} cannot tell, {counts['disagreements_open']} open disagreement(s), "
          f"{counts['unanswered']} unanswered, {counts['gold_answers_left_out']} answer(s) on gold cells")
    for p in report["pairs"]:
        kappa = "undefined" if p["kappa"] is None else f"{p['kappa']:.3f}"
        print(f"  agreement {p['a']} / {p['b']}: {p['agree']} of {p['cells']} cells ({p['agreement']:.1%}), kappa {kappa}")
    for g in report["gold"]:
        print(f"  gold {g['interpreter']}: {g['right']} of {g['answered']} right ({g['accuracy']:.1%})")
    return report

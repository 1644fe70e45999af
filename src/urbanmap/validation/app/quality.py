"""Quality control of the interpreters' answers: pure functions of tables.

- *Double-coded cells*: a share of the sample (validation.app.double_share), drawn from the
  seed, is given to two interpreters.
- *Agreement* of a pair of interpreters: over the sample cells both answered (their
  latest answers; gold cells apart), the share of equal answers and Cohen's (1960) kappa,
  κ = (p_o − p_e) / (1 − p_e), with p_o the observed agreement and p_e = Σ_k p_ak p_bk the
  agreement expected from each one's shares of the three answers (urban, non_urban,
  cannot_tell). κ is undefined (None) when p_e = 1 (both gave one and the same answer
  to every cell).
- *Gold scores*: each interpreter's share of right answers on the gold-standard cells
  they answered ("cannot tell" counts as wrong: the gold cells are meant to be clear).
- *Which answer wins* (`resolve`): an adjudicator's answer; else the answer all of a
  cell's interpreters gave; else the cell is an open disagreement (left out of the
  export until adjudicated). Unanswered cells are left out too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: The answers an interpreter gives, in the order the pages list them.
ANSWERS = ("urban", "non_urban", "cannot_tell")
#: What each answer reads as on the pages.
ANSWER_LABELS = {"urban": "urban", "non_urban": "non-urban", "cannot_tell": "cannot tell"}
#: Tag that separates the double-coded draw from the other random streams of the seed.
_DOUBLE = 707


def double_coded(n: int, share: float, seed: int) -> np.ndarray:
    """(n,) bool: round(share x n) of n sample cells, drawn from the seed, that two
    interpreters answer."""
    rng = np.random.default_rng([int(seed), _DOUBLE])
    mask = np.zeros(int(n), bool)
    mask[rng.permutation(int(n))[: int(round(float(share) * n))]] = True
    return mask


def cohen_kappa(a: Sequence[str], b: Sequence[str], labels: Sequence[str] = ANSWERS) -> float | None:
    """Cohen's kappa of two raters' answers to the same items (module docstring); None
    when undefined (no items, or p_e = 1)."""
    x, y = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    if x.size == 0:
        return None
    p_o = float(np.mean(x == y))
    p_e = float(sum(np.mean(x == k) * np.mean(y == k) for k in labels))
    if p_e >= 1:
        return None
    return (p_o - p_e) / (1 - p_e)


def pair_agreement(current: pd.DataFrame) -> pd.DataFrame:
    """Agreement of every pair of interpreters who answered common sample cells.

    Args:
        current: latest answers, columns interpreter, cell_id, answer, gold (bool).
    Returns:
        one row per pair (a < b by name): a, b, cells (answered by both), agree (equal
        answers), agreement (share), kappa (None when undefined).
    """
    rows = []
    sample = current[~current["gold"].astype(bool)]
    wide = sample.pivot(index="cell_id", columns="interpreter", values="answer")
    names = sorted(wide.columns)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = wide[[a, b]].dropna()
            if both.empty:
                continue
            agree = int((both[a] == both[b]).sum())
            rows.append({"a": a, "b": b, "cells": len(both), "agree": agree, "agreement": agree / len(both),
                         "kappa": cohen_kappa(both[a].tolist(), both[b].tolist())})
    return pd.DataFrame(rows, columns=["a", "b", "cells", "agree", "agreement", "kappa"])


def gold_scores(current: pd.DataFrame, gold: pd.Series) -> pd.DataFrame:
    """Each interpreter's score on the gold cells.

    Args:
        current: latest answers (interpreter, cell_id, answer).
        gold: the known answer of each gold cell, indexed by cell_id.
    Returns:
        one row per interpreter with a gold answer: interpreter, answered, right,
        accuracy (right / answered).
    """
    on_gold = current[current["cell_id"].isin(gold.index)]
    right = on_gold["answer"].to_numpy() == on_gold["cell_id"].map(gold).to_numpy()
    table = on_gold.assign(right=right).groupby("interpreter", sort=True)["right"].agg(["size", "sum"])
    return pd.DataFrame({"interpreter": table.index, "answered": table["size"].to_numpy(int),
                         "right": table["sum"].to_numpy(int),
                         "accuracy": (table["sum"] / table["size"]).to_numpy(float)})


def resolve(cells: Sequence[str], current: pd.DataFrame, adjudicated: pd.Series) -> pd.DataFrame:
    """The answer that counts for each sample cell.

    Args:
        cells: the sample's cell ids, in order.
        current: latest answers (interpreter, cell_id, answer) of sample cells.
        adjudicated: the adjudicator's latest answer, indexed by cell_id.
    Returns:
        one row per cell, in order: cell_id, answer (None when there is none yet),
        source: adjudicated, agreed (two or more, the same), single, disagreement or
        unanswered; interpreters (how many answered).
    """
    grouped = current.groupby("cell_id")["answer"].agg(lambda s: sorted(set(s))).to_dict()
    counts = current.groupby("cell_id")["interpreter"].nunique().to_dict()
    rows = []
    for cell in cells:
        given = grouped.get(cell, [])
        n = int(counts.get(cell, 0))
        if cell in adjudicated.index:
            answer, source = str(adjudicated[cell]), "adjudicated"
        elif not given:
            answer, source = None, "unanswered"
        elif len(given) > 1:
            answer, source = None, "disagreement"
        else:
            answer, source = given[0], "agreed" if n > 1 else "single"
        rows.append({"cell_id": cell, "answer": answer, "source": source, "interpreters": n})
    return pd.DataFrame(rows, columns=["cell_id", "answer", "source", "interpreters"])


def disagreements(current: pd.DataFrame) -> pd.DataFrame:
    """Sample cells whose interpreters gave different answers: cell_id and, per
    interpreter, their answer (columns named by interpreter)."""
    sample = current[~current["gold"].astype(bool)]
    differ = sample.groupby("cell_id")["answer"].nunique()
    cells = differ.index[differ > 1]
    return sample[sample["cell_id"].isin(cells)].pivot(index="cell_id", columns="interpreter", values="answer")

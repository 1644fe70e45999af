"""The first-urban-period map against synth's truth (issue 20's figure), on a region the
pipeline has run on (the embedded default: `dvc repro`).

    python benchmarks/figure_first_urban.py [key=value overrides]

Truth: the first period whose synthetic truth (truth/<period>/cells.parquet, true_class)
is urban; the map: series/series.parquet's first_urban (consistent series, and the raw
one recomputed without the rule). Agreement is counted on the cells that changed in the
truth (non-urban in the first period, urban in the last) and on all cells; prints one
JSON object.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from urbanmap.core import config, io, paths
from urbanmap.core.periods import PeriodSettings
from urbanmap.mapping.series import consistent_classes, first_urban


def main(argv: list[str]) -> dict:
    cfg = config.load(".", argv)
    labels = PeriodSettings.from_config(cfg).labels
    series, _, _ = io.read_cells(paths.series_dir(cfg) / "series.parquet", "series")
    truth = None
    for p in labels:
        t, _, _ = io.read_cells(paths.truth_cells(cfg, p), f"truth of {p}", ["cell_id", "true_class"])
        t = t[["cell_id", "true_class"]].rename(columns={"true_class": f"truth_{p}"})
        truth = t if truth is None else truth.merge(t, on="cell_id")
    merged = series.merge(truth, on="cell_id")
    true_cls = np.stack([merged[f"truth_{p}"].to_numpy(object) for p in labels], axis=1)
    true_first, _ = first_urban(true_cls, labels)
    raw_cls = np.stack([merged[f"class_{p}"].to_numpy(object) for p in labels], axis=1)
    p = np.stack([merged[f"p_urban_{p}"].to_numpy(float) for p in labels], axis=1)
    low = np.stack([merged[f"low_quality_{p}"].to_numpy(bool) for p in labels], axis=1)
    raw_first, _ = first_urban(consistent_classes(raw_cls, p, low, enabled=False), labels)
    mapped = merged["first_urban"].to_numpy(object)
    changed = (true_cls[:, 0] != "urban") & (true_cls[:, -1] == "urban")
    out = {
        "periods": labels,
        "cells": int(len(merged)),
        "changed_cells": int(changed.sum()),
        "agree_on_changed_consistent": round(float((mapped[changed] == true_first[changed]).mean()), 4),
        "agree_on_changed_raw": round(float((raw_first[changed] == true_first[changed]).mean()), 4),
        "agree_all_consistent": round(float((mapped == true_first).mean()), 4),
        "agree_all_raw": round(float((raw_first == true_first).mean()), 4),
        "truth_first_urban": {k: int((true_first == k).sum()) for k in ["before", *labels[1:], "never"]},
        "mapped_first_urban_on_changed": {k: int((mapped[changed] == k).sum()) for k in ["before", *labels[1:], "never",
                                                                                          "nodata"]},
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

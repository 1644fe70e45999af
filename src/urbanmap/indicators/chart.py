"""The chart of SDG indicator 11.3.1 (sdg.py): urban area and LCRPGR per municipality."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

#: LCRPGR beyond ±CLIP is drawn to CLIP and labelled with its value.
CLIP = 10.0


def sdg_chart(path: str | os.PathLike[str], out: pd.DataFrame, years: tuple[Any, Any], region_id: str,
              top: int = 25) -> None:
    """PNG: urban area at both periods (error-adjusted) and the adjusted LCRPGR with its
    95% interval, the `top` municipalities by urban area at t2, then the region.

    Args:
        out: the indicator table (sdg.table): one row per municipality, then the region's,
            whose `id` is `region_id`.
        years: (t1, t2).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t1, t2 = years
    munis = out[out["id"] != region_id].nlargest(top, f"urban_km2_{t2}_adjusted")
    rows = pd.concat([munis, out[out["id"] == region_id]]).iloc[::-1]
    labels = [f"{n} ({i})" if i != region_id else "REGION" for n, i in zip(rows["name"], rows["id"])]
    y = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, max(0.32 * len(rows) + 1.8, 4.0)), sharey=True)
    region = rows["id"].to_numpy() == region_id
    scale = np.where(region, 0.1, 1.0)  # the region's bars at a tenth, so municipalities stay legible
    ax1.barh(y - 0.2, rows[f"urban_km2_{t1}_adjusted"] * scale, 0.4, label=str(t1), color="#9ecae1")
    ax1.barh(y + 0.2, rows[f"urban_km2_{t2}_adjusted"] * scale, 0.4, label=str(t2), color="#3182bd")
    ax1.set_xlabel("urban area, km² (error-adjusted; region ÷ 10)")
    ax1.set_yticks(y, labels, fontsize=8)
    ax1.legend(loc="upper right", bbox_to_anchor=(1.0, 1.0 + 0.9 / max(0.32 * len(rows) + 1.8, 4.0)), ncol=2, frameon=False)
    ratio = rows["lcrpgr_adjusted"].to_numpy(float)
    ci = np.nan_to_num(rows["lcrpgr_adjusted_ci95"].to_numpy(float))
    ok = np.isfinite(ratio)
    shown = np.clip(ratio, -CLIP, CLIP)  # a PGR near 0 makes LCRPGR huge: the bar stops at ±CLIP
    few = rows["flags"].fillna("").astype(str).str.contains("few_sampled").to_numpy()
    bars = ax2.barh(y[ok], shown[ok], 0.6, color=np.where(ratio[ok] > 1, "#d6604d", "#4393c3"))
    for bar, faint in zip(bars, few[ok]):
        if faint:  # too few sampled cells for an interval: hatched and pale
            bar.set_alpha(0.4)
            bar.set_hatch("///")
    lo, hi = np.clip(ratio - ci, -CLIP, CLIP), np.clip(ratio + ci, -CLIP, CLIP)
    ax2.errorbar(shown[ok], y[ok], xerr=np.vstack([shown - lo, hi - shown])[:, ok], fmt="none", ecolor="0.2",
                 elinewidth=0.9, capsize=2)
    for k in np.flatnonzero(ok & (np.abs(ratio) > CLIP)):
        ax2.text(shown[k], y[k] + 0.35, f"{ratio[k]:.0f}", fontsize=7, ha="center", color="0.2")
    for k in np.flatnonzero(~ok):
        note = ax2.text(0.01, y[k], f"not computed: {rows['flags'].iloc[k]}", va="center", fontsize=7, color="0.4",
                        transform=ax2.get_yaxis_transform())
        note.set_in_layout(False)
    ax2.axvline(1.0, color="k", lw=0.8, ls="--")
    ax2.set_xlabel(f"LCRPGR of the error-adjusted areas, 95% interval (within ±{CLIP:g})\n"
                   "hatched: too few sampled cells for an interval")
    fig.suptitle(f"SDG 11.3.1, {t1}-{t2}: >1 land is consumed faster than population grows")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)

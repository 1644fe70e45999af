"""Stratified estimators of map accuracy and area from a validation sample.

The sample is a stratified random sample of units (cells): stratum h has area A_h (any
unit: km², ha, pixels) and n_h sampled units, each with a map class and a reference
class (from an interpreter). Every quantity is a stratified estimator of a population
total, a proportion or a ratio of two totals (Stehman 2014, Remote Sensing Letters 5:
1-10, eq. 2-3 and 25-28), which is what Olofsson et al. (2014, Remote Sensing of
Environment 148: 42-57, eq. 1-10) reduce to when the strata are the map classes:

- total of an indicator y: Ŷ = Σ_h A_h ȳ_h, V(Ŷ) = Σ_h A_h² s²_yh / n_h;
- ratio R = Y / X: R̂ = Ŷ / X̂, V(R̂) = Σ_h A_h² s²_dh / n_h / X̂², d = y - R̂ x;
- overall accuracy: proportion of area with map == reference;
- user's accuracy of class k: area mapped k and referenced k / area mapped k;
- producer's accuracy of class k: area mapped k and referenced k / area referenced k;
- error-adjusted area of class k: area referenced k (in the unit of the strata areas);
- error matrix: proportion of area mapped i and referenced j (rows map, columns reference).

s² uses n_h - 1 degrees of freedom and, as in Olofsson et al., the finite population
correction is ignored (the strata are given as areas, not unit counts). Confidence
intervals are ±1.96 standard errors (the paper's 95% intervals).

Rules for awkward samples (each a one-line InputError, or a documented result):

- a stratum with area > 0 and no sampled unit: error (its area cannot be estimated);
  a stratum with area 0 and no unit is ignored;
- a stratum with one sampled unit: error (s² is undefined with n_h - 1 = 0);
- a sampled stratum missing from the strata table, or a map / reference class outside
  the known classes: error naming the value;
- a class never mapped in the sample: user's accuracy is undefined (null, with a note);
  a class never in the reference: producer's accuracy is undefined (null, with a note)
  and its error-adjusted area is 0 ± 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from urbanmap.core.errors import InputError
from urbanmap.core.io import require_file

#: z of the two-sided 95% interval, as Olofsson et al. (2014) use it.
Z95 = 1.96


# --- sample design ----------------------------------------------------------------------


def sample_size(weights: Sequence[float], users_accuracy: Sequence[float], target_se: float) -> int:
    """Total sample size for a target standard error of overall accuracy.

    Olofsson et al. (2014), eq. 13 (Cochran 1977, eq. 5.25 without the finite population
    correction): n = (Σ_i W_i S_i / S(Ô))², S_i = sqrt(U_i (1 - U_i)).

    Args:
        weights: W_i, each stratum's share of the area (summing to 1).
        users_accuracy: U_i, the anticipated user's accuracy (0..1) of each stratum.
        target_se: S(Ô), the target standard error of overall accuracy (0..1).
    Returns:
        n, rounded up.
    """
    w, u = np.asarray(weights, float), np.asarray(users_accuracy, float)
    if not 0 < target_se < 1:
        raise InputError(f"validation.target_se: {target_se} is not in (0, 1)")
    if np.any((u < 0) | (u > 1)):
        raise InputError("validation.anticipated_accuracy: accuracies must be in [0, 1]")
    spread = float(np.sum(w * np.sqrt(u * (1 - u))))
    return max(int(math.ceil(round((spread / target_se) ** 2, 9))), 0)

def allocate(n: int, weights: Sequence[float], minimum: int, available: Sequence[int]) -> np.ndarray:
    """Units per stratum: proportional to area, with at least `minimum` per stratum.

    Strata whose proportional share n W_h falls below `minimum` get `minimum` (rare
    strata, e.g. new urban); strata whose share exceeds their number of units get all
    of them; the rest of n is shared among the other strata in proportion to their
    area, repeated until no stratum changes (Olofsson et al. 2014, section 5.1.1: "a
    minimum for the rare classes, the remainder proportional"). Shares are rounded by
    largest remainder, so the total is n, or more when the minimums need more. Strata
    with weight 0 get 0.

    Args:
        n: total sample size (e.g. from `sample_size`).
        weights: (H,) area shares of the strata.
        minimum: least units per stratum with weight > 0.
        available: (H,) units in each stratum (the cap).
    Returns:
        (H,) int64 units per stratum.
    """
    w = np.asarray(weights, float)
    cap = np.asarray(available, np.int64)
    size = np.zeros(w.size, float)
    fixed = w <= 0
    while True:
        free = ~fixed
        if not free.any():
            break
        remaining = max(n - size[fixed].sum(), 0.0)
        size[free] = remaining * w[free] / w[free].sum()
        low = free & (size < np.minimum(minimum, cap))
        high = free & (size > cap)
        if not (low | high).any():
            break
        size[low] = np.minimum(minimum, cap[low])
        size[high] = cap[high]
        fixed |= low | high
    whole = np.floor(size + 1e-9).astype(np.int64)
    # Largest remainder among the proportional strata, none past its cap.
    short = int(round(size.sum())) - int(whole.sum())
    if short > 0:
        rest = np.where(~fixed & (whole < cap), size - whole, -1.0)
        order = np.argsort(-rest, kind="stable")[:short]
        whole[order[rest[order] >= 0]] += 1
    return whole

# --- estimation -------------------------------------------------------------------------


def _var_of_total(values: np.ndarray, codes: np.ndarray, area: np.ndarray, n_h: np.ndarray) -> np.ndarray:
    """Σ_h A_h² s²_h / n_h for each column of `values` ((n, k)); codes: (n,) stratum index."""
    frame = pd.DataFrame(values)
    s2 = frame.groupby(codes).var(ddof=1).reindex(range(len(area))).fillna(0.0).to_numpy()
    return ((area**2 / np.maximum(n_h, 1))[:, None] * s2).sum(axis=0)

def _ratio(y: np.ndarray, x: np.ndarray, codes, area, n_h, weight) -> tuple[np.ndarray, np.ndarray]:
    """Ratio estimates Ŷ/X̂ and their standard errors, column by column; NaN where X̂ = 0."""
    y_tot, x_tot = weight @ y, weight @ x
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(x_tot > 0, y_tot / x_tot, np.nan)
        d = y - np.nan_to_num(r)[None, :] * x
        se = np.sqrt(_var_of_total(d, codes, area, n_h)) / x_tot
    return r, np.where(x_tot > 0, se, np.nan)

def _interval(estimate: float, se: float) -> dict:
    if not np.isfinite(estimate):
        return {"estimate": None, "ci95": None}
    return {"estimate": float(estimate), "ci95": float(Z95 * se)}

def stratified_estimates(
    map_class: Sequence[str],
    ref_class: Sequence[str],
    strata_area: pd.Series,
    stratum: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> dict:
    """Accuracy and error-adjusted area from a stratified random sample (module docstring).

    Args:
        map_class: (n,) map class of each sampled unit.
        ref_class: (n,) reference class of each unit.
        strata_area: area of each stratum (index: stratum name), any unit, >= 0.
        stratum: (n,) stratum of each unit; None: the map class.
        classes: the classes reported, in order; None: the strata (when they are the
            map classes), then the other map and reference classes, sorted.
    Returns:
        dict with n, strata ({name: {area, weight, n}}), classes, overall_accuracy,
        users_accuracy, producers_accuracy, area (error-adjusted, unit of strata_area),
        mapped_area (estimated; exact when the strata are the map classes),
        error_matrix ({classes, proportions: rows map, columns reference}) and notes.
        Every estimate is {"estimate": x, "ci95": 1.96 * SE}; undefined ones are null.
    """
    map_class = np.asarray(map_class, dtype=object).astype(str)
    ref_class = np.asarray(ref_class, dtype=object).astype(str)
    stratum = map_class if stratum is None else np.asarray(stratum, dtype=object).astype(str)
    if not (map_class.size == ref_class.size == stratum.size):
        raise InputError("sample: map_class, ref_class and stratum differ in length")
    if map_class.size == 0:
        raise InputError("sample: no sampled units")
    area_all = pd.Series(strata_area, dtype=float)
    if area_all.index.has_duplicates:
        raise InputError(f"strata: class {area_all.index[area_all.index.duplicated()][0]!r} appears twice")
    if (area_all < 0).any() or not np.isfinite(area_all).all():
        raise InputError(f"strata: area of {area_all.index[~(area_all >= 0)][0]!r} is negative or not a number")

    unknown = sorted(set(stratum) - set(area_all.index.astype(str)))
    if unknown:
        what = "map_class" if stratum is map_class else "stratum"
        raise InputError(f"sample: {what} {unknown[0]!r} is not a class of the strata ({', '.join(map(str, area_all.index))})")
    counts = pd.Series(stratum).value_counts()
    n_h_all = counts.reindex(area_all.index, fill_value=0).to_numpy()
    empty = area_all.index[(n_h_all == 0) & (area_all.to_numpy() > 0)]
    if len(empty):
        raise InputError(f"strata: stratum {empty[0]!r} has area {area_all[empty[0]]:g} but no sampled unit")
    single = area_all.index[(n_h_all == 1) & (area_all.to_numpy() > 0)]
    if len(single):
        raise InputError(f"sample: stratum {single[0]!r} has 1 sampled unit; its variance is undefined (needs >= 2)")
    keep = n_h_all > 0
    area_h = area_all[keep]
    names_h = [str(s) for s in area_h.index]
    area = area_h.to_numpy()
    n_h = n_h_all[keep]
    total = float(area.sum())
    if total <= 0:
        raise InputError("strata: the sampled strata have no area")
    codes = pd.Categorical(stratum, categories=names_h).codes
    weight = (area / n_h)[codes]  # (n,) area each unit stands for

    if classes is None:
        first = names_h if stratum is map_class else []
        classes = first + sorted((set(map_class) | set(ref_class)) - set(first))
    classes = [str(c) for c in classes]
    for what, values in (("map_class", map_class), ("ref_class", ref_class)):
        bad = sorted(set(values) - set(classes))
        if bad:
            raise InputError(f"sample: {what} {bad[0]!r} is not a known class ({', '.join(classes)})")

    k = len(classes)
    m = (map_class[:, None] == np.asarray(classes)[None, :]).astype(float)  # (n, k)
    r = (ref_class[:, None] == np.asarray(classes)[None, :]).astype(float)
    agree = (map_class == ref_class).astype(float)[:, None]
    both = m * r

    cells = (m[:, :, None] * r[:, None, :]).reshape(-1, k * k)
    p = (weight @ cells / total).reshape(k, k)

    oa = weight @ agree / total
    oa_se = np.sqrt(_var_of_total(agree, codes, area, n_h)) / total
    ua, ua_se = _ratio(both, m, codes, area, n_h, weight)
    pa, pa_se = _ratio(both, r, codes, area, n_h, weight)
    adj = weight @ r
    adj_se = np.sqrt(_var_of_total(r, codes, area, n_h))
    mapped = weight @ m

    notes = []
    for i, c in enumerate(classes):
        if mapped[i] == 0:
            notes.append(f"{c}: never mapped in the sample; user's accuracy undefined")
        if adj[i] == 0:
            notes.append(f"{c}: never in the reference; producer's accuracy undefined, area 0")
    return {
        "n": int(map_class.size),
        "strata": {s: {"area": float(a), "weight": float(a / total), "n": int(c)} for s, a, c in zip(names_h, area, n_h)},
        "classes": classes,
        "overall_accuracy": _interval(oa[0], oa_se[0]),
        "users_accuracy": {c: _interval(ua[i], ua_se[i]) for i, c in enumerate(classes)},
        "producers_accuracy": {c: _interval(pa[i], pa_se[i]) for i, c in enumerate(classes)},
        "area": {c: _interval(adj[i], adj_se[i]) for i, c in enumerate(classes)},
        "mapped_area": {c: float(mapped[i]) for i, c in enumerate(classes)},
        "total_area": total,
        "error_matrix": {
            "rows": "map class",
            "columns": "reference class",
            "classes": classes,
            "proportions": [[float(v) for v in row] for row in p],
        },
        "notes": notes,
    }

# --- files --------------------------------------------------------------------------------


def _read_csv(path: str | os.PathLike, what: str, columns: Sequence[str]) -> pd.DataFrame:

    path = require_file(path, what)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types; the user needs the file name
        raise InputError(f"{path}: cannot read {what}: {exc}".splitlines()[0]) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    return frame

def read_sample(path: str | os.PathLike) -> pd.DataFrame:
    """A sample CSV: one row per unit, `map_class`, `ref_class` and optional `stratum`
    (default: map_class). Values are stripped; an empty ref_class is an error (a unit
    not interpreted yet). Returns a frame with the three columns, as str."""
    frame = _read_csv(path, "sample", ["map_class", "ref_class"])
    if "stratum" not in frame.columns:
        frame["stratum"] = frame["map_class"]
    frame = frame[["map_class", "ref_class", "stratum"]].apply(lambda s: s.str.strip())
    for column in ("map_class", "stratum", "ref_class"):
        blank = np.flatnonzero(frame[column].to_numpy() == "")
        if blank.size:
            hint = " (not interpreted yet?)" if column == "ref_class" else ""
            raise InputError(f"{path}: {blank.size} row(s) have an empty {column}{hint}, first at line {blank[0] + 2}")
    if frame.empty:
        raise InputError(f"{path}: sample has no rows")
    return frame

def read_strata(path: str | os.PathLike) -> pd.Series:
    """A strata CSV: columns `class` and `area` (mapped area of each stratum, any unit,
    >= 0) and an optional `unit` (e.g. km2, kept in attrs["unit"]); other columns are
    ignored. Returns area indexed by class."""
    frame = _read_csv(path, "strata", ["class", "area"])
    names = frame["class"].str.strip()
    if names.duplicated().any():
        raise InputError(f"{path}: class {names[names.duplicated()].iloc[0]!r} appears twice")
    area = pd.to_numeric(frame["area"].str.strip(), errors="coerce")
    bad = np.flatnonzero(~(area >= 0).to_numpy())
    if bad.size:
        raise InputError(f"{path}: area {frame['area'].iloc[bad[0]]!r} of class {names.iloc[bad[0]]!r} is not a number >= 0")
    series = pd.Series(area.to_numpy(float), index=names.to_numpy(), name="area")
    units = frame["unit"].str.strip().unique() if "unit" in frame.columns else []
    series.attrs["unit"] = str(units[0]) if len(units) == 1 and units[0] else None
    return series

def estimate_files(sample_path: str | os.PathLike, strata_path: str | os.PathLike) -> dict:
    """`stratified_estimates` of a sample CSV and a strata CSV (see read_sample /
    read_strata), plus `unit` (the strata's area unit or None); InputError messages
    name the sample or strata file."""
    sample, strata = read_sample(sample_path), read_strata(strata_path)
    stratum_given = not (sample["stratum"] == sample["map_class"]).all()
    # The known classes: the strata (when they are the map classes) and the map classes;
    # a reference class outside them is a typo or a foreign legend.
    known = list(strata.index) if not stratum_given else []
    known += sorted(set(sample["map_class"]) - set(known))
    try:
        result = stratified_estimates(
            sample["map_class"], sample["ref_class"], strata,
            stratum=sample["stratum"] if stratum_given else None, classes=known,
        )
    except InputError as exc:
        text = str(exc)
        where = strata_path if text.startswith("strata:") else sample_path
        raise InputError(f"{where}: {text.split(': ', 1)[1]}") from None
    result["unit"] = strata.attrs.get("unit")
    return result

def summary_lines(result: dict, unit: str = "") -> list[str]:
    """Human-readable lines of an estimate: overall, then per class UA, PA and area."""
    def fmt(d, pct=True):
        if d["estimate"] is None:
            return "undefined"
        return f"{d['estimate']:.3f} ± {d['ci95']:.3f}" if pct else f"{d['estimate']:,.1f} ± {d['ci95']:,.1f}{unit}"

    lines = [f"overall accuracy {fmt(result['overall_accuracy'])} (n = {result['n']}, 95% CI)"]
    for c in result["classes"]:
        lines.append(
            f"  {c}: user's {fmt(result['users_accuracy'][c])}, producer's {fmt(result['producers_accuracy'][c])}, "
            f"area {fmt(result['area'][c], pct=False)} (mapped {result['mapped_area'][c]:,.1f}{unit})"
        )
    lines += [f"  note: {n}" for n in result["notes"]]
    return lines

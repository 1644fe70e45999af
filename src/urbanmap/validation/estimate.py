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
- error matrix: proportion of area mapped i and referenced j (rows map, columns reference);
- error-adjusted area of a class in a domain D (a municipality: `domain_areas`), by the
  difference estimator (Särndal, Swensson & Wretman 1992, Model Assisted Survey Sampling,
  §6.3; Stehman 2013, Remote Sensing of Environment 132: 202-211): the mapped area of D
  plus the estimated total of e = (reference - map) 1_D, V = V(Ê). With the strata the
  map classes and D the whole region it is Olofsson et al.'s area estimate.

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

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from urbanmap.core import io
from urbanmap.core.errors import InputError
from urbanmap.core.io import require_file

#: z of the two-sided 95% interval, as Olofsson et al. (2014) use it.
Z95 = 1.96


# --- estimation -------------------------------------------------------------------------


def _var_of_total(values: np.ndarray, codes: np.ndarray, area: np.ndarray, n_h: np.ndarray) -> np.ndarray:
    """Σ_h A_h² s²_h / n_h for each column of `values` ((n, k)); codes: (n,) stratum index."""
    frame = pd.DataFrame(values)
    s2 = frame.groupby(codes).var(ddof=1).reindex(range(len(area))).fillna(0.0).to_numpy()
    return np.asarray(((area**2 / np.maximum(n_h, 1))[:, None] * s2).sum(axis=0))


@dataclass(frozen=True)
class StrataDesign:
    """The sampled strata of a stratified sample, as the estimators use them.

    Attributes:
        names: (H,) the strata with sampled units, in the order of the strata table.
        area: (H,) float area of each (the strata table's unit).
        n_h: (H,) int sampled units of each.
        codes: (n,) int stratum (index into `names`) of each unit.
        weight: (n,) float area each unit stands for, A_h / n_h.
        total: the sampled strata's total area.
    """

    names: list[str]
    area: np.ndarray
    n_h: np.ndarray
    codes: np.ndarray
    weight: np.ndarray
    total: float

    def ratio(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ratio estimates Ŷ/X̂ of (n, k) indicators and their standard errors, column by
        column; NaN where X̂ = 0."""
        y_tot, x_tot = self.weight @ y, self.weight @ x
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(x_tot > 0, y_tot / x_tot, np.nan)
            d = y - np.nan_to_num(r)[None, :] * x
            se = np.sqrt(self.var_of_total(d)) / x_tot
        return r, np.where(x_tot > 0, se, np.nan)

    def var_of_total(self, values: np.ndarray) -> np.ndarray:
        """V(Ŷ) = Σ_h A_h² s²_yh / n_h of each column of (n, k) `values`."""
        return _var_of_total(values, self.codes, self.area, self.n_h)


def domain_areas(design: StrataDesign, mapped_km2: ArrayLike, map_is: ArrayLike, ref_is: ArrayLike,
                 domain: ArrayLike, n_domains: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Error-adjusted area of one class in each of `n_domains` domains (difference
    estimator, module docstring), in the unit of the design's strata areas.

    Args:
        design: the sample's strata (strata_design).
        mapped_km2: (k,) the class's mapped area of each domain (the whole map, not the sample).
        map_is, ref_is: (n,) bool, sampled unit mapped / referenced as the class.
        domain: (n,) int domain of each sampled unit, 0..k-1 (-1: in none).
    Returns:
        (estimate (k,), standard error (k,), sampled units (k,) of each domain).
    """
    # No library estimates totals over many domains from one stratified sample at once:
    # the (n, k) matrix of e 1_D keeps it to one product and one grouped variance.
    domain = np.asarray(domain, np.int64)
    error = np.asarray(ref_is, float) - np.asarray(map_is, float)
    inside = np.zeros((domain.size, n_domains))
    rows = np.flatnonzero(domain >= 0)
    inside[rows, domain[rows]] = 1.0
    e = inside * error[:, None]
    estimate = np.asarray(mapped_km2, float) + design.weight @ e
    se = np.sqrt(design.var_of_total(e))
    return estimate, se, inside.sum(axis=0).astype(np.int64)


def strata_design(stratum: np.ndarray, strata_area: pd.Series, stratum_is_map: bool = True) -> StrataDesign:
    """Check the strata table against the units' strata ((n,) str) and keep the sampled
    strata (rules in the module docstring); InputError "strata: ..." or "sample: ..."."""
    area_all = pd.Series(strata_area, dtype=float)
    if area_all.index.has_duplicates:
        raise InputError(f"strata: class '{area_all.index[area_all.index.duplicated()][0]}' appears twice")
    if (area_all < 0).any() or not np.isfinite(area_all).all():
        raise InputError(f"strata: area of '{area_all.index[~(area_all >= 0)][0]}' is negative or not a number")
    unknown = sorted(set(stratum) - set(area_all.index.astype(str)))
    if unknown:
        what = "map_class" if stratum_is_map else "stratum"
        raise InputError(f"sample: {what} '{unknown[0]}' is not a class of the strata ({', '.join(map(str, area_all.index))})")
    counts = pd.Series(stratum).value_counts()
    n_h_all = counts.reindex(area_all.index, fill_value=0).to_numpy()
    empty = area_all.index[(n_h_all == 0) & (area_all.to_numpy() > 0)]
    if len(empty):
        raise InputError(f"strata: stratum '{empty[0]}' has area {area_all[empty[0]]:g} but no sampled unit")
    single = area_all.index[(n_h_all == 1) & (area_all.to_numpy() > 0)]
    if len(single):
        raise InputError(f"sample: stratum '{single[0]}' has 1 sampled unit; its variance is undefined (needs >= 2)")
    keep = n_h_all > 0
    area_h = area_all[keep]
    names_h = [str(s) for s in area_h.index]
    area = area_h.to_numpy()
    n_h = n_h_all[keep]
    total = float(area.sum())
    if total <= 0:
        raise InputError("strata: the sampled strata have no area")
    codes = np.asarray(pd.Categorical(stratum, categories=names_h).codes)
    return StrataDesign(names_h, area, n_h, codes, (area / n_h)[codes], total)


def _interval(estimate: float, se: float) -> dict[str, float | None]:
    """{"estimate", "ci95": 1.96 SE}, both None when the estimate is undefined (NaN)."""
    if not np.isfinite(estimate):
        return {"estimate": None, "ci95": None}
    return {"estimate": float(estimate), "ci95": float(Z95 * se)}


def _report_classes(map_class: np.ndarray, ref_class: np.ndarray, classes: Sequence[str] | None,
                    first: list[str]) -> list[str]:
    """The classes reported: `classes`, or `first` then the other map and reference
    classes, sorted; InputError naming a map or reference class outside them."""
    if classes is None:
        classes = first + sorted((set(map_class) | set(ref_class)) - set(first))
    names = [str(c) for c in classes]
    for what, values in (("map_class", map_class), ("ref_class", ref_class)):
        bad = sorted(set(values) - set(names))
        if bad:
            raise InputError(f"sample: {what} '{bad[0]}' is not a known class ({', '.join(names)})")
    return names


def _estimates(map_class: np.ndarray, ref_class: np.ndarray, classes: list[str], d: StrataDesign) -> dict[str, Any]:
    """The estimates of a checked sample (stratified_estimates' result)."""
    k, total = len(classes), d.total
    m = (map_class[:, None] == np.asarray(classes)[None, :]).astype(float)  # (n, k)
    r = (ref_class[:, None] == np.asarray(classes)[None, :]).astype(float)
    agree = (map_class == ref_class).astype(float)[:, None]
    both = m * r

    cells = (m[:, :, None] * r[:, None, :]).reshape(-1, k * k)
    p = (d.weight @ cells / total).reshape(k, k)

    oa = d.weight @ agree / total
    oa_se = np.sqrt(d.var_of_total(agree)) / total
    ua, ua_se = d.ratio(both, m)
    pa, pa_se = d.ratio(both, r)
    adj = d.weight @ r
    adj_se = np.sqrt(d.var_of_total(r))
    mapped = d.weight @ m

    notes = []
    for i, c in enumerate(classes):
        if mapped[i] == 0:
            notes.append(f"{c}: never mapped in the sample; user's accuracy undefined")
        if adj[i] == 0:
            notes.append(f"{c}: never in the reference; producer's accuracy undefined, area 0")
    return {
        "n": int(map_class.size),
        "strata": {s: {"area": float(a), "weight": float(a / total), "n": int(c)} for s, a, c in zip(d.names, d.area, d.n_h)},
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


def stratified_estimates(
    map_class: ArrayLike,
    ref_class: ArrayLike,
    strata_area: pd.Series,
    stratum: ArrayLike | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
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
    mapped = np.asarray(map_class, dtype=object).astype(str)
    ref = np.asarray(ref_class, dtype=object).astype(str)
    by_map = stratum is None
    strata = mapped if stratum is None else np.asarray(stratum, dtype=object).astype(str)
    if not (mapped.size == ref.size == strata.size):
        raise InputError("sample: map_class, ref_class and stratum differ in length")
    if mapped.size == 0:
        raise InputError("sample: no sampled units")
    design = strata_design(strata, strata_area, by_map)
    names = _report_classes(mapped, ref, classes, design.names if by_map else [])
    return _estimates(mapped, ref, names, design)


# --- files --------------------------------------------------------------------------------


def _read_csv(path: str | os.PathLike[str], what: str, columns: Sequence[str]) -> pd.DataFrame:
    """A CSV of strings (no NA parsing), columns stripped; InputError naming the file when
    it is missing, unreadable or lacks `columns`."""
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


def read_sample(path: str | os.PathLike[str], keep: Sequence[str] = ()) -> pd.DataFrame:
    """A sample CSV: one row per unit, `map_class`, `ref_class` and optional `stratum`
    (default: map_class), and the columns `keep` (required then, e.g. cell_id). Values
    are stripped; an empty ref_class is an error (a unit not interpreted yet). Returns a
    frame with the three columns and `keep`, as str."""
    frame = _read_csv(path, "sample", ["map_class", "ref_class", *keep])
    if "stratum" not in frame.columns:
        frame["stratum"] = frame["map_class"]
    frame = cast(pd.DataFrame, frame[[*keep, "map_class", "ref_class", "stratum"]].apply(lambda s: s.str.strip()))
    for column in ("map_class", "stratum", "ref_class"):
        blank = np.flatnonzero(frame[column].to_numpy() == "")
        if blank.size:
            hint = " (not interpreted yet?)" if column == "ref_class" else ""
            raise InputError(f"{path}: {blank.size} row(s) have an empty {column}{hint}, first at line {blank[0] + 2}")
    if frame.empty:
        raise InputError(f"{path}: sample has no rows")
    return frame


def read_strata(path: str | os.PathLike[str]) -> pd.Series:
    """A strata CSV: columns `class` and `area` (mapped area of each stratum, any unit,
    >= 0) and an optional `unit` (e.g. km2, kept in attrs["unit"]); other columns are
    ignored. Returns area indexed by class."""
    frame = _read_csv(path, "strata", ["class", "area"])
    names = frame["class"].str.strip()
    if names.duplicated().any():
        raise InputError(f"{path}: class '{names[names.duplicated()].iloc[0]}' appears twice")
    area = pd.to_numeric(frame["area"].str.strip(), errors="coerce")
    bad = np.flatnonzero(~(area >= 0).to_numpy())
    if bad.size:
        raise InputError(f"{path}: area '{frame['area'].iloc[bad[0]]}' of class '{names.iloc[bad[0]]}' is not a number >= 0")
    series = pd.Series(area.to_numpy(float), index=names.to_numpy(), name="area")
    units = list(frame["unit"].str.strip().unique()) if "unit" in frame.columns else []
    series.attrs["unit"] = str(units[0]) if len(units) == 1 and units[0] else None
    return series


def estimate_files(sample_path: str | os.PathLike[str], strata_path: str | os.PathLike[str]) -> dict[str, Any]:
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


def summary_lines(result: dict[str, Any], unit: str = "") -> list[str]:
    """Human-readable lines of an estimate: overall, then per class UA, PA and area."""

    def fmt(d: dict[str, Any], pct: bool = True) -> str:
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


# --- the estimate step ----------------------------------------------------------------------


def run_estimate(sample_path: str | os.PathLike[str], strata_path: str | os.PathLike[str],
                 out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Step `validate estimate`: estimate from a sample CSV and a strata CSV, print it,
    and write it as JSON to `out` if given (the dvc stage: interpreted.csv + strata.csv
    -> estimate.json)."""
    result = estimate_files(sample_path, strata_path)
    unit = result.pop("unit", None)
    result = {"sample_file": str(sample_path), "strata_file": str(strata_path), "area_unit": unit, **result}
    if out is not None:
        io.write_json(out, result)
    suffix = f" {unit}" if unit else ""
    print("\n".join(summary_lines(result, suffix)) + (f"\n-> {out}" if out else ""))
    return result

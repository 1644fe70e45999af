"""The `validation` config section and the paths of the three steps, read once.

`ValidationSettings.from_config(cfg)` is what `urbanmap validate sample | interpret |
estimate` read from the config: every value checked here, with the config key named in
the error, so the steps below take typed values only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from urbanmap.core import paths
from urbanmap.core.errors import InputError
from urbanmap.core.periods import PeriodSettings

#: Values of validation.strata.
DESIGNS = ("map", "change")


@dataclass(frozen=True)
class ChipSettings:
    """validation.chips: the image chips shown to interpreters.

    Attributes:
        context: cells shown around the sampled cell on each side.
        scale: magnification (nearest neighbour), screen pixels per mosaic pixel.
        true_colour, false_colour: 3 band names each (R, G, B), by mosaic band description.
        stretch: low and high percentiles (0..100) of the linear stretch, over all chips.
    """

    context: int = 1
    scale: int = 3
    true_colour: tuple[str, ...] = ("red", "green", "blue")
    false_colour: tuple[str, ...] = ("nir", "red", "green")
    stretch: tuple[float, ...] = (2.0, 98.0)


@dataclass(frozen=True)
class ValidationSettings:
    """What the validation steps read from the config, checked.

    Attributes:
        target_year: periods.target's label, the period of the map validated.
        seed: the global seed (the sample's draw, the simulated interpreter's errors).
        strata: validation.strata: "map" (urban, non_urban) or "change" (change classes).
        anticipated: validation.anticipated_accuracy: anticipated user's accuracy (0..1)
            by stratum name.
        target_se: validation.target_se: target standard error of overall accuracy (0..1).
        min_per_stratum: validation.min_per_stratum: least cells per stratum (>= 2).
        interpreter_error: validation.interpreter_error: share (0..1) of sampled cells the
            simulated interpreter labels wrongly.
        chips: validation.chips.
        pixel_size: data.pixel_size, metres; patch_size: data.patch_size or None.
        predictions: predictions/<target>.parquet (sample's input).
        change_cells: change/change.parquet (sample's input with strata=change).
        grid: grid.parquet (the chips' lattice).
        mosaic: mosaic_<target>.tif (the chips' imagery).
        truth: truth/<target>/cells.parquet (the simulated interpreter's truth).
        folder: validation/, where the steps write:
        sample, sample_gpkg, strata_csv, chips_dir: sample's outputs;
        interpreted: interpret's output; estimate: estimate's output.
    """

    target_year: str
    seed: int
    strata: str
    anticipated: dict[str, float]
    target_se: float
    min_per_stratum: int
    interpreter_error: float
    chips: ChipSettings
    pixel_size: float
    patch_size: int | None
    predictions: Path
    change_cells: Path
    grid: Path
    mosaic: Path
    truth: Path
    folder: Path
    sample: Path
    sample_gpkg: Path
    strata_csv: Path
    chips_dir: Path
    interpreted: Path
    estimate: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ValidationSettings:
        """Read the settings; InputError naming the config key that is wrong."""
        v = cfg.validation
        target = PeriodSettings.from_config(cfg).target.label
        explicit = cfg.data.get("patch_size")
        return cls(
            target_year=target, seed=int(cfg.seed), strata=_strata(v), anticipated=_anticipated(v),
            target_se=_share(v, "target_se", open_interval=True), min_per_stratum=_minimum(v),
            interpreter_error=_share(v, "interpreter_error"), chips=_chips(v), pixel_size=float(cfg.data.pixel_size),
            patch_size=int(explicit) if explicit else None, predictions=paths.predictions(cfg, target),
            change_cells=paths.change_cells(cfg), grid=paths.grid(cfg), mosaic=paths.mosaic(cfg, target),
            truth=paths.truth_cells(cfg, target), folder=paths.validation_dir(cfg), sample=paths.validation_sample(cfg),
            sample_gpkg=paths.validation_sample_gpkg(cfg), strata_csv=paths.validation_strata(cfg),
            chips_dir=paths.validation_chips(cfg), interpreted=paths.validation_interpreted(cfg),
            estimate=paths.validation_estimate(cfg),
        )


def _strata(v: DictConfig) -> str:
    """validation.strata, one of DESIGNS."""
    design = str(v.strata)
    if design not in DESIGNS:
        raise InputError(f"validation.strata: {design!r} is not map or change")
    return design


def _anticipated(v: DictConfig) -> dict[str, float]:
    """validation.anticipated_accuracy, each value in [0, 1]."""
    out = {str(k): float(a) for k, a in dict(v.anticipated_accuracy).items()}
    bad = [k for k, a in out.items() if not 0 <= a <= 1]
    if bad:
        raise InputError(f"validation.anticipated_accuracy: accuracies must be in [0, 1], got {bad[0]}: {out[bad[0]]:g}")
    return out


def _share(v: DictConfig, key: str, open_interval: bool = False) -> float:
    """validation.<key> as a share: in [0, 1], or (0, 1) with `open_interval`."""
    value = float(v[key])
    if open_interval and not 0 < value < 1:
        raise InputError(f"validation.{key}: {value} is not in (0, 1)")
    if not 0 <= value <= 1:
        raise InputError(f"validation.{key}: {value} is not in [0, 1]")
    return value


def _minimum(v: DictConfig) -> int:
    """validation.min_per_stratum, >= 2."""
    minimum = int(v.min_per_stratum)
    if minimum < 2:
        raise InputError(f"validation.min_per_stratum: {minimum} is below 2 (a stratum's variance needs 2 units)")
    return minimum


def _chips(v: DictConfig) -> ChipSettings:
    """validation.chips: 3 band names per composite, a whole context and scale."""
    c = v.chips
    true_bands, false_bands = tuple(str(b) for b in c.true_colour), tuple(str(b) for b in c.false_colour)
    if len(true_bands) != 3 or len(false_bands) != 3:
        raise InputError("validation.chips: true_colour and false_colour need 3 band names each")
    return ChipSettings(int(c.context), int(c.scale), true_bands, false_bands, tuple(float(s) for s in c.stretch))

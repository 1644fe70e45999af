"""The `validation` config section and the paths of the three steps, read once.

`ValidationSettings.from_config(cfg)` is what `urbanmap validate sample | interpret |
estimate` read from the config, and `AppSettings.from_config(cfg)` what the web app
(`urbanmap interpret serve | export`) reads besides: every value checked here, with the
config key named in the error, so the steps below take typed values only.
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
#: Values of validation.interpreter.
INTERPRETERS = ("simulated", "human")
#: In validation/: the interpreters' answers exported from the web app (interpreted.csv's
#: columns; validate interpret's input with validation.interpreter=human), the quality
#: control of that export (JSON), and the web app's answers (SQLite; not a DVC output).
#: Named here, not in core.paths, as only the validation steps and the app use them.
HUMAN_FILE, HUMAN_QA_FILE, DATABASE_FILE = "human.csv", "human_qa.json", "interpretations.sqlite"


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
    false_colour: tuple[str, ...] = ("swir1", "nir", "red")
    stretch: tuple[float, ...] = (2.0, 98.0)


@dataclass(frozen=True)
class ValidationSettings:
    """What the validation steps read from the config, checked.

    Attributes:
        target_period: periods.target's label, the period of the map validated.
        seed: the global seed (the sample's draw, the simulated interpreter's errors).
        strata: validation.strata: "map" (urban, non_urban) or "change" (change classes).
        anticipated: validation.anticipated_accuracy: anticipated user's accuracy (0..1)
            by stratum name.
        target_se: validation.target_se: target standard error of overall accuracy (0..1).
        min_per_stratum: validation.min_per_stratum: least cells per stratum (>= 2).
        interpreter: validation.interpreter: "simulated" (the synthetic truth) or "human"
            (the web app's exported answers, `human`).
        interpreter_error: validation.interpreter_error: share (0..1) of sampled cells the
            simulated interpreter labels wrongly.
        chips: validation.chips.
        chip_periods: the chips' periods (labels), top row first: periods.target, then
            periods.census (once when they are the same period); chip_mosaics: their mosaics.
        pixel_size: data.pixel_size, metres; patch_size: data.patch_size or None.
        predictions: predictions/<target>.parquet (sample's input).
        change_cells: change/change.parquet (sample's input with strata=change).
        grid: grid.parquet (the chips' lattice).
        mosaic: mosaic_<target>.tif (the chips' imagery).
        truth: truth/<target>/cells.parquet (the simulated interpreter's truth).
        folder: validation/, where the steps write:
        sample, sample_gpkg, strata_csv, chips_dir: sample's outputs;
        interpreted: interpret's output; estimate: estimate's output;
        human: the web app's export (interpret's input with interpreter=human), human_qa:
        its quality control; database: the web app's answers (SQLite).
    """

    target_period: str
    seed: int
    strata: str
    anticipated: dict[str, float]
    target_se: float
    min_per_stratum: int
    interpreter: str
    interpreter_error: float
    chips: ChipSettings
    chip_periods: tuple[str, ...]
    chip_mosaics: tuple[Path, ...]
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
    human: Path
    human_qa: Path
    database: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ValidationSettings:
        """Read the settings; InputError naming the config key that is wrong."""
        v = cfg.validation
        periods = PeriodSettings.from_config(cfg)
        target = periods.target.label
        explicit = cfg.data.get("patch_size")
        shown = tuple(dict.fromkeys((target, periods.census.label)))
        return cls(
            target_period=target, seed=int(cfg.seed), strata=_strata(v), anticipated=_anticipated(v),
            target_se=_share(v, "target_se", open_interval=True), min_per_stratum=_minimum(v),
            interpreter=_choice(v, "interpreter", INTERPRETERS), interpreter_error=_share(v, "interpreter_error"),
            chips=_chips(v), chip_periods=shown, chip_mosaics=tuple(paths.mosaic(cfg, p) for p in shown),
            pixel_size=float(cfg.data.pixel_size),
            patch_size=int(explicit) if explicit else None, predictions=paths.predictions(cfg, target),
            change_cells=paths.change_cells(cfg), grid=paths.grid(cfg), mosaic=paths.mosaic(cfg, target),
            truth=paths.truth_cells(cfg, target), folder=paths.validation_dir(cfg), sample=paths.validation_sample(cfg),
            sample_gpkg=paths.validation_sample_gpkg(cfg), strata_csv=paths.validation_strata(cfg),
            chips_dir=paths.validation_chips(cfg), interpreted=paths.validation_interpreted(cfg),
            estimate=paths.validation_estimate(cfg), human=paths.validation_dir(cfg) / HUMAN_FILE,
            human_qa=paths.validation_dir(cfg) / HUMAN_QA_FILE, database=paths.validation_dir(cfg) / DATABASE_FILE,
        )


def _strata(v: DictConfig) -> str:
    """validation.strata, one of DESIGNS."""
    design = str(v.strata)
    if design not in DESIGNS:
        raise InputError(f"validation.strata: {design!r} is not map or change")
    return design


def _choice(v: DictConfig, key: str, choices: tuple[str, ...]) -> str:
    """validation.<key>, one of `choices`."""
    value = str(v[key])
    if value not in choices:
        raise InputError(f"validation.{key}: {value!r} is not {' or '.join(choices)}")
    return value


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


@dataclass(frozen=True)
class AppSettings:
    """validation.app: the interpreters' web app (`urbanmap interpret serve | export`).

    Attributes:
        host, port: where `serve` listens (127.0.0.1: this machine only; port 0: any free
            port); the --host and --port options win over them.
        token: what every request must carry when the host is not a loopback address (or
            when it is set); None: a random one, printed at start.
        double_share: share (0..1) of the sampled cells given to two interpreters, whose
            agreement the QA page shows.
        gold: a CSV of gold-standard cells (columns cell_id, answer) mixed into every
            interpreter's cells, or None.
        batch: cells given to an interpreter at a time (>= 1); more when they are done.
        show_map_class: whether the interpreter's page shows the map's class (it biases
            interpreters: off by default).
    """

    host: str = "127.0.0.1"
    port: int = 8750
    token: str | None = None
    double_share: float = 0.2
    gold: Path | None = None
    batch: int = 50
    show_map_class: bool = False

    @classmethod
    def from_config(cls, cfg: DictConfig) -> AppSettings:
        """Read validation.app; InputError naming the key that is wrong."""
        a = cfg.validation.app
        port = a.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InputError(f"validation.app.port: {port!r} is not a port number (0-65535)")
        token = None if a.token is None else str(a.token)
        if token is not None and (len(token) < 8 or any(ch.isspace() for ch in token)):
            raise InputError("validation.app.token: needs at least 8 characters and no spaces")
        share = float(a.double_share)
        if not 0 <= share <= 1:
            raise InputError(f"validation.app.double_share: {share:g} is not in [0, 1]")
        batch = int(a.batch)
        if batch < 1:
            raise InputError(f"validation.app.batch: {batch} is below 1")
        if not isinstance(a.show_map_class, bool):
            raise InputError(f"validation.app.show_map_class: {a.show_map_class!r} is not true or false")
        gold = None if a.gold is None else Path(str(a.gold))
        return cls(str(a.host), int(port), token, share, gold, batch, bool(a.show_map_class))

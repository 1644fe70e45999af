"""`urbanmap validate sample | interpret | estimate`: validation of the target period's map.

The three steps, each a dvc stage, write under `<region_dir>/validation/`:

1. **sample** (`urbanmap validate sample [key=value ...]`, sample.py): a stratified
   random sample of grid cells of periods.target's map, with the sample design of
   Olofsson et al. (2014) -> sample.csv, sample.gpkg, strata.csv and chips/.
2. **interpret** (embedded default, interpret.py): the simulated interpreter fills
   ref_class from the synthetic truth -> interpreted.csv. With real imagery, people fill
   sample.csv's ref_class column instead.
3. **estimate** (`urbanmap validate estimate [--sample S.csv --strata T.csv] [--out F.json]`,
   estimate.py): Olofsson et al. (2014) stratified estimates of overall, user's and
   producer's accuracy, the error-adjusted area of each class (km² for the stage's own
   strata.csv) and the error matrix in area proportions; printed, and written to
   estimate.json. Without --sample and --strata it reads interpreted.csv and strata.csv
   and writes estimate.json (the dvc stage); with them, any sample and strata files,
   written only where --out says.

And **periods** (`urbanmap validate periods`, periods.py; the embedded default): every
listed period's map sampled, interpreted from the synthetic truth and estimated ->
validation/periods/ (areas.csv, areas.png) and validation/periods.json: the area series
with its intervals.

This module is the command line's entry (cli.py holds its parser).
"""

from __future__ import annotations

import argparse

from urbanmap.core import config
from urbanmap.validation.estimate import run_estimate
from urbanmap.validation.interpret import run_interpret
from urbanmap.validation.periods import run_periods
from urbanmap.validation.sample import run_sample
from urbanmap.validation.settings import ValidationSettings


def command(args: argparse.Namespace) -> None:
    """Run `urbanmap validate <step>` (its parser: cli.py); the configuration is read only
    when needed."""
    if args.step == "estimate" and args.sample and args.strata and not args.overrides:
        run_estimate(args.sample, args.strata, args.out)
        return
    cfg = config.load(".", args.overrides)
    if args.step == "sample":
        run_sample(cfg)
    elif args.step == "interpret":
        run_interpret(cfg)
    elif args.step == "periods":
        run_periods(cfg)
    else:
        settings = ValidationSettings.from_config(cfg)
        defaults = not (args.sample or args.strata)
        out = args.out or (settings.estimate if defaults else None)
        run_estimate(args.sample or settings.interpreted, args.strata or settings.strata_csv, out)

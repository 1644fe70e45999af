"""`urbanmap <stage> [key=value ...]`: the one entry point, used by dvc.yaml and by people.

Stage modules are imported only when their stage runs, so `urbanmap grid` never loads
torch or the other heavy libraries of later stages.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from urbanmap.core import config, io, paths
from urbanmap.core.errors import InputError

#: stage name -> (module:function, one-line description)
STAGES = {
    "grid": ("urbanmap.census.grid:run", "square cells covering the region -> grid.parquet"),
    "labels": ("urbanmap.census.labels:run", "census measures and urban / non-urban label per cell -> labels.parquet"),
    "synth": ("urbanmap.imagery.synth:run", "synthetic Landsat C2 L2 scenes, STAC catalog and truth for period= -> scenes/<period>/, truth/<period>/"),
    "mosaic": ("urbanmap.imagery.mosaic:run", "cloud-free geomedian of the scenes of period= -> mosaic_<period>.tif (COG), mosaic_<period>.json"),
    "patches": ("urbanmap.training.patches:run", "balanced sample of labelled cells, their mosaic patches -> patches.npz"),
    "train": ("urbanmap.training.train:run", "cross-validation and final model (model=, cv=) -> cv_predictions.parquet, model/"),
    "learning-curve": ("urbanmap.training.learning_curve:run", "accuracy against training cells per class (learning_curve.sizes) -> plots/learning_curve.csv, learning_curve/"),
    "evaluate": ("urbanmap.training.evaluate:run", "per-class metrics, plots, report, MLflow runs -> metrics.json, plots/, evaluation/"),
    "predict": ("urbanmap.mapping.predict:run", "the final model on every grid cell of period='s mosaic -> predictions/<period>.parquet/.tif/.png/.json"),
    "series": ("urbanmap.mapping.series:run", "every period's map per cell: trajectories, consistent series, first urban period, changes between periods, area series -> series/, series.json"),
    "change": ("urbanmap.mapping.change:run", "periods.census's map against periods.target's -> change/ (parquet, COG, PNG, municipalities.csv, region.json)"),
    "plan": ("urbanmap.compute.plan:run", "dry run of the heavy stages: tile index, scenes per tile, estimated cost -> tiles.parquet, plan.json"),
    "sdg": ("urbanmap.indicators.sdg:run", "SDG 11.3.1 (LCR, PGR, LCRPGR) per municipality and region -> sdg/sdg_11_3_1.csv, .png, .json"),
}


#: `urbanmap validate <step>`: step -> one-line description (validation/validate.py runs them)
VALIDATE_STEPS = {
    "sample": "stratified random sample of periods.target's map, chips -> validation/sample.csv, .gpkg, strata.csv, chips/",
    "interpret": "reference classes: the simulated interpreter (validation.interpreter=simulated) or the exported "
                 "answers of people (human: validation/human.csv) -> validation/interpreted.csv",
    "estimate": "accuracy and error-adjusted area (Olofsson et al. 2014) -> validation/estimate.json",
    "periods": "every period's urban area with its interval, from the target's interpreted sample and the other "
               "periods' own (synth's truth) -> validation/periods/, periods.json",
}


def _add_steps_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str, help_text: str,
                      title: str, steps: dict[str, str]) -> dict[str, argparse.ArgumentParser]:
    """`urbanmap <command> <step> ... key=value ...` on the CLI's sub-parsers, one step per
    entry of `steps` (name -> description); returns each step's parser for its options."""
    p = sub.add_parser(command, help=help_text, description=f"{title}: " + "; ".join(f"{k}: {v}" for k, v in steps.items()))
    parsers = p.add_subparsers(dest="step", metavar="<step>", required=True)
    made = {}
    for name, text in steps.items():
        made[name] = parsers.add_parser(name, help=text, description=text)
        made[name].add_argument("overrides", nargs="*", metavar="key=value", help="Hydra-style overrides")
    return made


def _add_validate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`urbanmap validate <step> ...` on the CLI's sub-parsers."""
    q = _add_steps_parser(sub, "validate", "validation of periods.target's map: sample, interpret, estimate",
                          "Validation of periods.target's map", VALIDATE_STEPS)["estimate"]
    q.add_argument("--sample", help="sample CSV: map_class, ref_class, optional stratum (default: validation/interpreted.csv)")
    q.add_argument("--strata", help="strata CSV: class, area (default: validation/strata.csv)")
    q.add_argument("--out", help="write the estimate as JSON here (default without --sample: validation/estimate.json)")


#: `urbanmap interpret <step>`: step -> one-line description (validation/app/command.py runs them)
INTERPRET_STEPS = {
    "serve": "the interpreters' web app on the sample: label cells, quality control, map "
             "(answers in validation/interpretations.sqlite)",
    "export": "adjudicated answers -> validation/human.csv (validate interpret's input with validation.interpreter=human)",
}


def _add_interpret_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`urbanmap interpret <step> ...` on the CLI's sub-parsers."""
    steps = _add_steps_parser(sub, "interpret", "people label the validation sample in a local web app; export their answers",
                              "The interpreters' web app", INTERPRET_STEPS)
    steps["serve"].add_argument("--host", help="address to listen on (default validation.app.host: 127.0.0.1, this "
                                               "machine only; another address requires a token)")
    steps["serve"].add_argument("--port", type=int, help="port (default validation.app.port: 8750; 0: any free port)")
    steps["export"].add_argument("--out", help="write here instead of validation/human.csv")


def _add_compare_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`urbanmap compare RUN [RUN ...] [--out DIR] [key=value ...]` (comparison/compare.py runs it)."""
    text = ("paired comparison of earlier train runs (result folders, DVC experiments or MLflow run ids) "
            "-> comparison/ (report.md, experiments.csv, pairs.csv, ranking.csv, gaps.csv, intervals.png)")
    p = sub.add_parser("compare", help=text, description=text)
    p.add_argument("items", nargs="+", metavar="RUN|key=value",
                   help="two or more runs to compare, and Hydra-style overrides (which locate the default --out)")
    p.add_argument("--out", help="output folder (default: <region_dir>/comparison)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="urbanmap",
        description="Urban areas from Landsat on a national grid. Each stage reads params.yaml "
        "in the current directory, with Hydra-style overrides (data=mexico, labels.rule=population_density).",
    )
    sub = parser.add_subparsers(dest="command", metavar="<stage>", required=True)
    for name, (_, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra-style overrides")
    p = sub.add_parser(
        "params",
        help="write params.yaml from conf/ (the composed defaults, plus overrides), as dvc exp run does",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides for the composition")

    _add_validate_parser(sub)
    _add_interpret_parser(sub)
    _add_compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (2 on bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.command in ("validate", "interpret", "compare"):
            module = {"validate": "urbanmap.validation.validate", "interpret": "urbanmap.validation.app.command",
                      "compare": "urbanmap.comparison.compare"}[args.command]
            importlib.import_module(module).command(args)
            return 0
        if args.command == "params":
            out = config.write_params(".", args.overrides)
            print(f"params: wrote {out}")
            return 0
        cfg = config.load(".", args.overrides)
        io.require_writable_folder(paths.region_dir(cfg))  # in a second, not after the stage's work
        module, _, func = STAGES[args.command][0].partition(":")
        getattr(importlib.import_module(module), func)(cfg)
    except InputError as exc:
        print(f"urbanmap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # every output is written to a temporary and renamed, so none is half-written
        print(f"urbanmap {args.command}: interrupted; outputs left as they were", file=sys.stderr)
        return 130
    except OSError as exc:
        message = io.describe_os_error(exc)
        if message is None:
            raise
        print(f"urbanmap {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

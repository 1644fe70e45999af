"""The round trip of human validation, scripted: sample -> serve -> interpret -> export ->
estimate, on a copy of a region's outputs.

    python -m urbanmap.examples.round_trip [--cells 30] [--work /tmp/urbanmap_round_trip] [key=value ...]

The region's validation inputs (grid, predictions, change, mosaics, truth and the
validation sample with its chips; `urbanmap validate sample` first, or `dvc repro`) are
copied to --work, so nothing of the region is written. `urbanmap interpret serve` runs
there in a subprocess, every sample cell double-coded, with 4 gold cells outside the
sample. Two scripted interpreters, "ana" and "ben", answer the same --cells cells through
the app's own pages and forms (HTTP, as a browser posts them): each answers the
synthetic truth, ana wrong on 5% of the cells and ben on 10% (drawn from the seed), and
ben answers one gold cell wrongly. An adjudicator settles each disagreement with the
truth. Then `urbanmap interpret export`, `urbanmap validate interpret
validation.interpreter=human` and `urbanmap validate estimate` run on the copy, and the
agreement, kappa, gold scores and estimate are printed.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from urbanmap.core import config, io, paths
from urbanmap.core.periods import PeriodSettings

#: Per-region files the round trip reads (relative to the region's folder).
INPUTS = ("grid.parquet", "labels.parquet", "change", "validation")


def copy_region(cfg: DictConfig, work: Path) -> Path:
    """Copy the region's validation inputs to `work/<name>/`; return that folder."""
    source = paths.region_dir(cfg)
    target = work / source.name
    shutil.rmtree(work, ignore_errors=True)
    target.mkdir(parents=True)
    for name in INPUTS:
        item = source / name
        if not item.exists():
            raise SystemExit(f"{item}: not found; run `dvc repro` (or `urbanmap validate sample`) first")
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, target / name)
    for item in source.glob("mosaic_*.tif"):
        shutil.copy2(item, target / item.name)
    shutil.copytree(source / "predictions", target / "predictions")
    shutil.copytree(source / "truth", target / "truth")
    for stale in ("interpretations.sqlite", "interpretations.sqlite-wal", "interpretations.sqlite-shm", "human.csv"):
        (target / "validation" / stale).unlink(missing_ok=True)
    return target


class Session:
    """An interpreter's (or adjudicator's) HTTP session with the app: pages and forms."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **query: str) -> str:
        """The page at `path` with `query`."""
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return str(response.read().decode())

    def post(self, path: str, form: dict[str, str]) -> int:
        """Send `form` to `path`; the status of the page it leads to."""
        request = urllib.request.Request(self.base + path, data=urllib.parse.urlencode(form).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:  # follows the 303 to the next page
            return int(response.status)


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden fields of a page's form (interpreter, cell, nonce)."""
    return {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page)}


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Return once the server at `port` answers."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped (exit {proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not answer within 120 s")


def run(cells: int, work: Path, overrides: list[str]) -> None:
    """The round trip (module docstring)."""
    cfg = config.load(".", overrides)
    region = copy_region(cfg, work)
    period = PeriodSettings.from_config(cfg).target.label
    truth, _, _ = io.read_cells(region / "truth" / period / "cells.parquet", "truth", ["cell_id", "true_class"])
    true_class = dict(zip(truth["cell_id"], truth["true_class"]))
    sample = pd.read_csv(region / "validation" / "sample.csv", dtype={"cell_id": str})
    outside = truth[~truth["cell_id"].isin(sample["cell_id"])]
    gold = pd.concat([outside[outside["true_class"] == c].head(2) for c in ("urban", "non_urban")])
    gold[["cell_id", "true_class"]].rename(columns={"true_class": "answer"}).to_csv(work / "gold.csv", index=False)
    over = [*overrides, f"out_dir={work}", "validation.app.double_share=1.0", f"validation.app.batch={cells}",
            f"validation.app.gold={work / 'gold.csv'}"]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "urbanmap", "interpret", "serve", "--port", str(port), *over],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(port, proc)
        base = f"http://127.0.0.1:{port}"
        rng = np.random.default_rng([int(cfg.seed), 909])
        flip = {"urban": "non_urban", "non_urban": "urban"}
        wrong = {"ana": set(sample["cell_id"][rng.random(len(sample)) < 0.05]),
                 "ben": set(sample["cell_id"][rng.random(len(sample)) < 0.10])}
        gold_wrong = gold["cell_id"].iloc[0]
        start = time.monotonic()
        answered = {"ana": 0, "ben": 0}
        for name in ("ana", "ben"):
            person = Session(base)
            while answered[name] < cells:
                page = person.get("/", interpreter=name)
                form = hidden_fields(page)
                if "cell" not in form:
                    break
                cell = form["cell"]
                value = true_class[cell]
                if cell in wrong[name] or (name == "ben" and cell == gold_wrong):
                    value = flip[value]
                person.post("/answer", {**form, "action": "answer", "answer": value, "confidence": "3", "comment": ""})
                answered[name] += cell not in set(gold["cell_id"])
        seconds = time.monotonic() - start
        adjudicator = Session(base)
        qa = adjudicator.get("/qa")
        settled = 0
        for cell, nonce in re.findall(r'name="cell" value="([^"]+)"><input type="hidden" name="nonce" value="([^"]+)"', qa):
            adjudicator.post("/adjudicate", {"cell": cell, "nonce": nonce, "adjudicator": "chief",
                                             "answer": true_class[cell], "comment": "checked"})
            settled += 1
        qa = html.unescape(adjudicator.get("/qa"))
    finally:
        proc.kill()
        proc.wait()
    pair = re.search(r'data-pair="ana\|ben".*?class="num agreement">([^<]+)<.*?class="num kappa">([^<]+)<', qa, re.S)
    print(f"round trip on {cfg.data.name}: ana and ben answered {answered['ana']} and {answered['ben']} sample cells "
          f"(and the gold cells among them) in {seconds:.1f} s through the app's forms; the QA page: agreement "
          f"{pair.group(1) if pair else '?'}, kappa {pair.group(2) if pair else '?'}; {settled} disagreement(s) adjudicated")
    for step in (["interpret", "export"], ["validate", "interpret", "validation.interpreter=human"], ["validate", "estimate"],
                 ["sdg"]):
        words = step[:2] if step[0] != "sdg" else step[:1]
        if subprocess.run([sys.executable, "-m", "urbanmap", *words, *over, *step[len(words):]]).returncode != 0:
            raise SystemExit(f"urbanmap {' '.join(step)} failed")


def main() -> None:
    """`python -m urbanmap.examples.round_trip` (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=30, help="sample cells each interpreter answers")
    parser.add_argument("--work", default="/tmp/urbanmap_round_trip", help="folder of the region's copy")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    run(args.cells, Path(args.work), args.overrides)


if __name__ == "__main__":
    main()

"""The web app's tests: a small region with a drawn sample and chips, gold cells, the app
in-process (Flask's test client) and the forms of its pages."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from helpers.project import REPO
from helpers.validation import validation_region
from urbanmap.cli import main
from urbanmap.core import config
from urbanmap.validation.app import command

#: Overrides that give the small region a sample of about 170 cells.
LARGER_SAMPLE = ["validation.target_se=0.025"]


def sampled_region(root: Path, *extra: str) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """validation_region under `root` with its sample drawn (`urbanmap validate sample`);
    returns (overrides, cells with `truth`, the sample)."""
    over, cells = validation_region(root)
    over = [*over, *LARGER_SAMPLE, *extra]
    assert main(["validate", "sample", *over]) == 0
    sample = pd.read_csv(root / "tiny" / "validation" / "sample.csv", dtype={"cell_id": str, "ref_class": str},
                         keep_default_na=False)
    return over, cells, sample


def write_gold(root: Path, cells: pd.DataFrame, sample: pd.DataFrame, n: int = 2) -> tuple[Path, dict[str, str]]:
    """A gold CSV of `n` cells outside the sample (half urban, half not, their truth);
    returns its path and {cell_id: answer}."""
    outside = cells[~cells["cell_id"].isin(sample["cell_id"])]
    picks = pd.concat([outside[outside["truth"] == "urban"].head(n - n // 2), outside[outside["truth"] == "non_urban"].head(n // 2)])
    gold = dict(zip(picks["cell_id"], picks["truth"]))
    path = root / "gold.csv"
    pd.DataFrame({"cell_id": list(gold), "answer": list(gold.values())}).to_csv(path, index=False)
    return path, gold


def make_app(over: list[str], host: str = "127.0.0.1"):
    """The app of the region's overrides, in-process: (Flask test client, Context)."""
    app, ctx, _ = command.prepare(config.load(REPO, over), host)
    app.testing = True
    return app.test_client(), ctx


def page_form(html: str) -> dict[str, str]:
    """The interpreter page's hidden fields (interpreter, cell, nonce)."""
    return {name: value for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html)}


def shown_cell(html: str) -> str | None:
    """The cell an interpreter page shows, or None (the done page)."""
    found = re.search(r'id="cell-id">([^<]+)<', html)
    return found.group(1) if found else None


def answer_next(client, name: str, answer_of, confidence: int = 3, comment: str = "") -> tuple[str | None, object]:
    """Open interpreter `name`'s next cell and answer it with answer_of(cell_id) through
    the form; returns (the cell, the POST's response), or (None, None) when done."""
    page = client.get("/", query_string={"interpreter": name})
    html = page.get_data(as_text=True)
    cell = shown_cell(html)
    if cell is None:
        return None, None
    form = page_form(html)
    response = client.post("/answer", data={**form, "action": "answer", "answer": answer_of(cell),
                                            "confidence": str(confidence), "comment": comment})
    return cell, response


def cli_ok(*args: str) -> None:
    """Run the CLI in-process; assert exit status 0."""
    assert main(list(args)) == 0

"""Fixtures of the interpreters' web app tests (in-process and in the browser)."""

import pytest

from helpers.interpreting import sampled_region, write_gold


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """A sampled region (about 170 cells) and 2 gold cells, made once for this module."""
    root = tmp_path_factory.mktemp("sampled")
    over, cells, sample = sampled_region(root / "out")
    gold_path, gold = write_gold(root, cells, sample)
    return root, over, cells, sample, gold

# Entry points for a fresh clone with ../shared beside it:
#   make run        install everything into .venv, then `dvc repro` on the default region
#   make test       install everything into .venv, then run the whole test suite (CI runs it)
#   make test-fast  the suite without the tests marked `slow` (end-to-end, DVC, Dask,
#                   subprocess-heavy): under 3 minutes, for the edit-test loop
#   make lint       ruff (lint, import order, pyupgrade, docstrings) and mypy
#   make docs       the documentation site (MkDocs, Material theme) into site/, offline
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install run test test-fast lint docs params bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,dev]"
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro

test: install
	pytest

test-fast: install
	pytest -m "not slow"

lint: install
	ruff check src tests benchmarks
	mypy

docs: install
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir site

# Rewrite params.yaml from conf/ after editing the defaults (a test checks they agree).
params: install
	urbanmap params

bench: install
	python benchmarks/bench_grid_labels.py

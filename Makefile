# Entry points for a fresh clone with ../shared beside it:
#   make run        install the locked environment (uv.lock) into .venv, then `dvc repro`
#   make test       install the locked environment into .venv, then run the whole test suite (CI runs it)
#   make lock       re-resolve uv.lock from pyproject.toml (after editing its dependencies)
#   make test-fast  the suite without the tests marked `slow` (end-to-end, DVC, Dask,
#                   subprocess-heavy): under 3 minutes, for the edit-test loop
#   make lint       ruff (lint, import order, pyupgrade, docstrings) and mypy
#   make docs       the documentation site (MkDocs, Material theme) into site/, offline
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
# uv installs and locks the environment; it lives in its own small venv, apart from .venv,
# because `uv sync` removes from .venv whatever the lock does not list.
UV_VERSION := 0.13.9
UV := $(abspath .tools)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
export PATH := $(BIN):$(PATH)

.PHONY: install run test test-fast lint docs params bench lock sweep

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# --locked: exactly the versions and hashes of uv.lock, and an error if pyproject.toml
# asks for something the lock does not hold (then run `make lock`). --compile-bytecode:
# the .pyc files are written once here, so that every stage's process loads them instead
# of compiling its imports from source (which took 6-10 s per stage where, as in many
# containers and CI images, PYTHONDONTWRITEBYTECODE is set).
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-extras --compile-bytecode --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

lock: $(UV)
	$(UV) lock --python $(PYTHON)

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

# A sweep: models x feature groups x CV schemes, queued as DVC experiments of the train
# and evaluate stages (the rest of the pipeline stays as `make run` left it), run one
# after another, then compared by `urbanmap compare` into data/<region>/comparison/.
# The MLflow store is the project's own (a queued run works in a temporary copy,
# .dvc/tmp/exps/<tmp>/, where the link below gives its `../shared` the repository's).
SWEEP_MODELS ?= extra_trees,random_forest,hist_gradient_boosting,logistic_regression
SWEEP_FEATURES ?= [band_stats,index_stats],[band_stats,index_stats,texture]
SWEEP_CV ?= kfold,spatial
SWEEP_NAME ?= sweep
sweep: install
	mkdir -p .dvc/tmp/exps && ln -sfn ../../../../shared .dvc/tmp/exps/shared
	dvc exp run --queue evaluate -S 'model=$(SWEEP_MODELS)' -S 'model.features.groups=$(SWEEP_FEATURES)' \
		-S 'cv=$(SWEEP_CV)' -S 'tracking.sweep=$(SWEEP_NAME)' -S 'tracking.uri=sqlite:///$(CURDIR)/mlflow.db'
	dvc exp run --run-all --jobs 1
	urbanmap compare sweep:$(SWEEP_NAME)

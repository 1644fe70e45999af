# Entry points for a fresh clone with ../shared beside it:
#   make run    install everything into .venv, then `dvc repro` on the default region
#   make test   install everything into .venv, then run the whole test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install run test params bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro

test: install
	pytest

# Rewrite params.yaml from conf/ after editing the defaults (a test checks they agree).
params: install
	urbanmap params

bench: install
	python benchmarks/bench_grid_labels.py

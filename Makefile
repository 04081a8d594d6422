# Two commands for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CORES  ?= 2

.PHONY: setup demo test test-fast lint clean

$(BIN)/snakemake: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

setup: $(BIN)/snakemake  ## create .venv with pinned dependencies

demo: setup  ## generate the synthetic demo data and run the whole chain
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores $(CORES)

test: setup  ## the test suite (what CI runs): ruff, unit tests, real snakemake runs
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -q --durations=15

test-fast: setup  ## unit tests only (no snakemake runs), ~1-2 minutes on 2 cores
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -q -m "not workflow"

lint: setup  ## ruff (lint + format check) and snakemake --lint
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	PATH="$(abspath $(BIN)):$$PATH" snakemake --lint

clean:  ## remove workflow outputs (keeps .venv)
	rm -rf results logs demo_data .snakemake

# `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,slurm]'
	$(BIN)/python -m pip install --quiet -e '.[ray]' || echo "Ray could not be installed: the Ray executor's test will be skipped"
	$(BIN)/python -m pip install --quiet -e '.[tensorboard]' || echo "TensorBoard could not be installed: its test will be skipped"
	$(BIN)/python -m pip install --quiet -e '.[lightning]' || echo "Lightning could not be installed: its example's test will be skipped"
	touch $@

demo: setup
	$(BIN)/widealign compare --out results/compare

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests && $(BIN)/ruff format --check src tests

bench: setup
	$(BIN)/widealign bench

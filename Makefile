# `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-table demo-check docs test lint bench

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

# Write the README's demo table from the demo's output (results/compare/compare.csv).
demo-table:
	$(BIN)/python scripts/demo_table.py --csv results/compare/compare.csv

# Rerun the demo (make demo's command) into a fresh folder; fail if the README's table differs.
demo-check: setup
	rm -rf results/demo-check
	$(BIN)/widealign compare --out results/demo-check --no-progress
	$(BIN)/python scripts/demo_table.py --csv results/demo-check/compare.csv --check

# The documentation site (docs/ and the API reference) in strict mode, into site/.
docs: setup
	$(BIN)/mkdocs build --strict

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests && $(BIN)/ruff format --check src tests

bench: setup
	$(BIN)/widealign bench

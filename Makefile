# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo quick lint test test-all test-gpu clean

setup: $(STAMP)
	@bash scripts/ensure-data.sh
	@bash scripts/ensure-chromium.sh

# pip takes torch/torchvision from the machine's local wheel store when it has them.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (once; pip speaks only on an error) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[dev,ray]'  # setuptools' editable-install notice is not an error
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/paramreuse study --out runs/demo

quick: setup
	$(VENV)/bin/paramreuse study --quick --out runs/quick

# The layer contracts (pyproject.toml [tool.importlinter]) and ruff, before any test runs.
lint: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check

test: setup lint
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m 'not gpu'

test-gpu: setup
	$(PY) -m pytest -q -m gpu

clean:
	rm -rf runs .pytest_cache

# Everything a fresh machine needs is installed by these targets into .venv (pip only).
# GPU users: create .venv and install a CUDA build of torch into it *before* running make;
# the setup step keeps an already-installed torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0
PROFILE ?= quick
RUNS_DIR ?= runs
WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: setup test test-fast lint smoke reproduce-table-6.10 clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev,real]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bench tests examples

smoke: $(STAMP)
	$(BIN)/bench grid table-6.10 --profile smoke --seeds 0,1 --runs-dir $(RUNS_DIR)/smoke --workers $(WORKERS)
	$(BIN)/bench table table-6.10 --runs-dir $(RUNS_DIR)/smoke --profile smoke --seeds 0,1

reproduce-table-6.10: $(STAMP)
	$(BIN)/bench reproduce table-6.10 --profile $(PROFILE) --runs-dir $(RUNS_DIR) --workers $(WORKERS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

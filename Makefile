# fedlake: `make run` runs the default federation, `make test` runs the tests.
# Both create/refresh .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: run test lint bench clean venv

venv: $(STAMP)

# Torch first, pinned to the CPU build: any other spec pulls GBs of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

run: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/fedlake run --config examples/activity_fedavg.toml

test: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src/fedlake/core src/fedlake/aggregators src/fedlake/transforms src/fedlake/algorithms src/fedlake/client src/fedlake/data src/fedlake/models src/fedlake/orchestration

bench: $(STAMP)
	@echo "benchmarks arrive with the algorithm issues"

clean:
	rm -rf $(VENV) runs .pytest_cache

# fedlake: `make run` runs the default federation, `make test` runs the tests.
# Both create/refresh .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: run test lint docs bench clean venv browser

venv: $(STAMP)

# Torch first and exactly 2.13.0: on our machines that resolves to the CPU wheel, while any
# other spec (or letting a dependency pull torch) fetches GBs of CUDA wheels. Elsewhere, get
# the CPU build with: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

run: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/fedlake run --config examples/activity_fedavg.toml

# The status page's test drives a real headless browser: Debian's chromium (playwright
# drives it; no browser is downloaded). Installed here when missing and we may; otherwise
# the test fails and says how to install it.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	    else echo "note: no chromium; tests/network/test_status_page.py will fail (apt-get install -y chromium)"; fi; }

test: $(STAMP) browser
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports
	$(BIN)/mypy src/fedlake/core src/fedlake/aggregators src/fedlake/transforms src/fedlake/privacy src/fedlake/compression src/fedlake/plugins src/fedlake/algorithms src/fedlake/client src/fedlake/data src/fedlake/models src/fedlake/orchestration src/fedlake/backends src/fedlake/simulation src/fedlake/harness src/fedlake/config src/fedlake/testing src/fedlake/guidance src/fedlake/doctor

# The docs site (mkdocs.yml) into site/; strict: a broken link, anchor or image fails it.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# Flower, for the benchmarks' comparisons only (bench/aggregation.py, and
# bench/vs_flower_simulation.py, whose simulation engine needs the `simulation` extra, which
# pulls Ray), in its own venv: installed into .venv it would downgrade protobuf and break
# MLflow. Same numpy as .venv, so both sides run the same numpy code. (Defined before
# `bench`: make expands prerequisites as it reads them.)
FLOWER_VENV := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed
FLWR_VERSION := 1.42.0

$(FLOWER_STAMP): $(STAMP)
	test -x $(FLOWER_VENV)/bin/python || $(PY) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOWER_VENV)/bin/python -m pip install -q "flwr[simulation]==$(FLWR_VERSION)" "numpy==$$($(BIN)/python -c 'import numpy; print(numpy.__version__)')" "numba==$$($(BIN)/python -c 'import numba; print(numba.__version__)')"
	touch $(FLOWER_STAMP)

# Benchmarks print a table and write bench/results/*.json (plots go to docs/img/).
bench: $(STAMP) $(FLOWER_STAMP)
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python bench/compression.py
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python bench/aggregation.py --flower $(FLOWER_VENV)/bin/python
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python bench/privacy_utility.py
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python bench/fedprox_synthetic.py
	$(BIN)/python bench/vs_flower_simulation.py --flower-python $(FLOWER_VENV)/bin/python
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python bench/network.py --phases --timeout 1200

clean:
	rm -rf $(VENV) runs .pytest_cache

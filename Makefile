# stationflow: `make test` and `make demo` set everything up from nothing (venv, deps, redis-server).
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -q --durations=15
# most of the suite waits on real processes (faults, e2e, demo runs) rather than computing: four
# pytest workers (pytest-xdist) overlap those waits on two cores. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder)
# the fault suite at a fifth of its full size (every fault still exercised; each count has a
# floor): what `make test` and CI run. Full size: make test STATIONFLOW_FAULTS_SCALE=1
STATIONFLOW_FAULTS_SCALE ?= 0.2
export STATIONFLOW_FAULTS_SCALE

.PHONY: help setup python-check redis chromium test test-unit test-integration lint demo bench clean

help:
	@echo "make test              lint + the whole test suite (sets up .venv and redis-server if missing)"
	@echo "make demo              run the whole system locally (private Redis and Kafka-compatible broker)"
	@echo "make bench             quick benchmarks -> bench/report.md"
	@echo "make lint              ruff check + mypy + import contracts (lint-imports)"
	@echo "make test-unit         only tests that need no servers"
	@echo "make clean             remove the venv and caches"

python-check:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: '$(PYTHON)' not found. Install Python >= 3.11 or run: make PYTHON=/path/to/python3.11 test" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "error: stationflow needs Python >= 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." >&2; \
	  echo "       Install python3.11+ or run: make PYTHON=/path/to/python3.11 test" >&2; exit 1; }

$(BIN)/python: | python-check
	$(PYTHON) -m venv $(VENV)

# reinstall only when pyproject.toml is newer than the stamp
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

redis:
	@if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ] && [ ! -x /usr/sbin/redis-server ] \
	     && [ ! -x /usr/local/bin/redis-server ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "error: redis-server not found. Install it: 'sudo apt-get install -y redis-server' or 'brew install redis'." >&2; \
	    exit 1; \
	  fi; \
	fi

# Debian's chromium drives the console's browser test (tests/integration/test_console.py);
# without root or apt-get that one test is skipped and says why
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
	     && ! command -v google-chrome >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: chromium not found; the console's browser test will be skipped ('sudo apt-get install -y chromium')" >&2; \
	  fi; \
	fi

setup: python-check $(STAMP) redis chromium

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: setup lint
	$(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/pytest $(PYTEST_ARGS) -m unit

test-integration: setup
	$(BIN)/pytest $(PYTEST_ARGS) -m integration

demo: setup
	$(BIN)/stationflow demo

bench: setup
	$(BIN)/stationflow bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

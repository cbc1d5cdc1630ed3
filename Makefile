.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help install test lint demos bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" "setuptools>=70" wheel

install: $(BIN)/python ## create .venv and install ATM with pinned dependencies (and dev tools)
	$(BIN)/python -m pip install --quiet -e ".[dev]"

test: ## run the test suite (PostgreSQL/MySQL cases run when ATM_TEST_*_URL are set)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: ## ruff over the package and the tests
	$(BIN)/ruff check atm tests bench demos

demos: ## rebuild the demo CSVs from datasets shipped in installed packages
	$(BIN)/python demos/build_demos.py

bench: ## run every benchmark (BENCH_ARGS=--quick for a minutes-long pass); needs .[bench]
	mkdir -p bench/results
	for name in overhead scaling api load quality; do \
		$(BIN)/python bench/$$name.py $(BENCH_ARGS) --json bench/results/$$name.json || exit 1; \
	done

clean: ## remove build leftovers
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

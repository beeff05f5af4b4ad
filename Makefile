# `make run` runs the whole system; `make test` runs the test suite. Both create
# the virtual environment from pyproject.toml first when it is missing or stale.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install run test lint deploy-check unit soak bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/rehost run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

deploy-check: $(STAMP)
	deploy/check.sh

test: lint deploy-check
	$(BIN)/pytest -q -m "not soak"

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

soak: $(STAMP)
	$(BIN)/pytest -q -m soak

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

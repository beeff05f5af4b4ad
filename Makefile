# `make run` runs the whole system; `make test` runs the test suite. Both create
# the virtual environment from requirements.lock first when it is missing or stale.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install lock audit run test lint deploy-check unit soak bench bench-quick clean

# The locked set first (requirements.lock), then the project itself without resolving again.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# SecantusDB, the MongoDB-wire server the tests run the MongoDB adapter on: test-only (a
# GPL beta), pinned, in a virtual environment of its own, run as a process, never imported.
SECANTUS := .venv-secantus/.installed-stamp
$(SECANTUS):
	$(PYTHON) -m venv .venv-secantus
	.venv-secantus/bin/pip install --quiet --upgrade pip
	.venv-secantus/bin/pip install --quiet SecantusDB==0.7.0b3
	touch $(SECANTUS)

# Re-resolves pyproject.toml's ranges in a scratch environment and pins the result.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet '.[dev]'
	{ sed -n '1,2p' requirements.lock; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^rehost'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

run: $(STAMP)
	$(BIN)/rehost run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

deploy-check: $(STAMP)
	deploy/check.sh

# Known vulnerabilities in the locked set; says NOT RUN where no vulnerability service answers.
audit: $(STAMP)
	$(BIN)/python deploy/audit.py

# The whole suite on SQLite (and the store contract on MongoDB too), then the suites that
# exercise the services' stores once more with every service on the MongoDB adapter.
MONGO_SUITES := tests/e2e/test_sources_api.py tests/e2e/test_command_results.py \
	tests/e2e/test_migration_lifecycle.py tests/e2e/test_tasks_and_locks.py \
	tests/e2e/test_scripts.py tests/e2e/test_faults.py

# Debian's Chromium and its driver, for the console's tests in a real browser.
CHROMIUM := command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	apt-get install -y -q chromium chromium-driver || { apt-get update -q && apt-get install -y -q chromium chromium-driver; }; } >/dev/null

test: lint deploy-check audit $(SECANTUS)
	$(CHROMIUM)
	$(BIN)/pytest -q -m "not soak"
	REHOST_TEST_STORE=mongodb $(BIN)/pytest -q -m "not soak and not sqlite_only" $(MONGO_SUITES)

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# wrk drives the HTTP load; Debian's package, installed when missing.
WRK := command -v wrk >/dev/null || { apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; } >/dev/null

bench: $(STAMP) $(SECANTUS)
	$(WRK)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP) $(SECANTUS)
	$(WRK)
	$(BIN)/python -m bench.run --quick

soak: $(STAMP)
	$(CHROMIUM)
	$(BIN)/pytest -q -m soak

clean:
	rm -rf $(VENV) .venv-secantus var .pytest_cache .mypy_cache .ruff_cache

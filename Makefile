# Everything a fresh machine needs: `make run` to start, `make test` to check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SERVER_STAMP := $(VENV)/.installed-server
TEST_STAMP := $(VENV)/.installed-test
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: install install-test run migrate test test-all lint browser bench clean

# What serving needs: the server and the light client, nothing the tests alone use.
$(SERVER_STAMP): pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e . -e ./client
	touch $(SERVER_STAMP)

# The test stack on top: the test tools, and the frameworks the client's callbacks integrate
# with, as test extras (none of them is a dependency of the server or of the client).
$(TEST_STAMP): $(SERVER_STAMP)
	$(PIP) -e '.[dev]' -e './client[fastai,lightning,keras,transformers]'
	touch $(TEST_STAMP)

install: $(SERVER_STAMP)

install-test: $(TEST_STAMP)

migrate: install
	$(BIN)/advisor migrate

# Starts the service on 127.0.0.1:8000 with a SQLite file (advisor.db) in this folder.
run: install
	$(BIN)/advisor serve

lint: install-test
	$(BIN)/ruff check app tests benchmarks migrations client
	$(BIN)/ruff format --check app tests benchmarks migrations client
	$(BIN)/mypy

# The browser tests drive Debian's Chromium; install it when missing (as root, as in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "WARNING: could not install chromium: the browser tests will be skipped"

test: lint browser
	$(BIN)/pytest -m "not slow"

test-all: lint browser
	$(BIN)/pytest

bench: install-test
	$(BIN)/python -m benchmarks.ingest

clean:
	rm -rf $(VENV) advisor.db advisor.db-wal advisor.db-shm .pytest_cache .mypy_cache .ruff_cache

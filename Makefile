# Everything a fresh machine needs: `make run` to start, `make test` to check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run migrate test test-all lint browser bench clean

# The client is its own distribution (client/); the tests install it with the frameworks its
# callbacks integrate with, as test extras: none of them is a dependency of the server.
$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' \
		-e './client[fastai,lightning,keras,transformers]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/advisor migrate

# Starts the service on 127.0.0.1:8000 with a SQLite file (advisor.db) in this folder.
run: install
	$(BIN)/advisor serve

lint: install
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

bench: install
	$(BIN)/python -m benchmarks.ingest

clean:
	rm -rf $(VENV) advisor.db advisor.db-wal advisor.db-shm .pytest_cache .mypy_cache .ruff_cache

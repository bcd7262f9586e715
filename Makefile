# Two commands do everything on a fresh machine:
#   make run    the demo on the embedded broker (installs what it needs)
#   make test   the test suite against real servers (installs them too)
# and, while working: make test-fast (tests/unit, no servers, under a minute) and
# make lint (ruff, and mypy strict on mantis_stream/; .ci/run runs it before the tests).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-fast lint services bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: install
	$(BIN)/mantis-stream demo

services:
	scripts/install-services.sh

test: install services
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands do everything on a fresh machine:
#   make run    the demo on the embedded broker (installs what it needs)
#   make test   the test suite against real servers (installs them too)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test services bench clean

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

bench: install
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache

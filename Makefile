# Everything a fresh machine needs: `make example` runs the bundled example job, `make test` the tests.
# Both create the virtualenv on first use. torch is installed from its CPU wheel first (any other torch
# requirement would pull GBs of CUDA packages), then the project with its development extras.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: example test lint
example: $(STAMP)
	$(BIN)/fleet render
	$(BIN)/fleet validate

test: $(STAMP)
	$(BIN)/ruff check fleet render tests benchmarks
	$(BIN)/ruff format --check fleet render tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

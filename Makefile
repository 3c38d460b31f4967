# Everything a fresh machine needs: `make example` runs the bundled example job, `make test` the tests.
# Both create the virtualenv on first use. torch is installed from its CPU wheel first (any other torch
# requirement would pull GBs of CUDA packages), then the project with its development extras.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: example test lint
# The bundled example end to end: render and validate the hub manifests, write each cluster's private data
# partition, train the job with real Flower processes over mutual TLS, and check the model on every digit.
example: $(STAMP)
	$(BIN)/fleet render
	$(BIN)/fleet data prepare --job mnist-digits
	$(BIN)/fleet run mnist-digits
	$(BIN)/fleet evaluate .fleet/runs/mnist-digits/storage/models/mnist-digits/model.pt --report .fleet/runs/mnist-digits/report

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

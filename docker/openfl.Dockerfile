# The OpenFL image of `framework: openfl` jobs: OpenFL 1.9's aggregator (server role) and collaborator (client role),
# from OpenFL's own lock (requirements/openfl.txt: OpenFL pins grpcio<1.66, Flower needs >=1.70, so they cannot share
# an image), plus the `fleet` package without its dependencies: the OpenFL processes import only fleet.app (model,
# training, data), fleet.app_openfl (the plan's aggregator, task runner, loader, launcher) and fleet.hub.
# Build from the repository root:  docker build -f docker/openfl.Dockerfile -t ghcr.io/fleet-fl/fleet-openfl:0.1.0 .
# Roles are chosen by the command the controller's objects give (`fleet.runtimes.openfl`):
# `python -m fleet.app_openfl.launcher --workspace=/workspace plan initialize | aggregator start | collaborator start`.
# The aggregator pod's progress sidecar runs in the app image (docker/app.Dockerfile).

FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fleet ./fleet
COPY render ./render
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    COLUMNS=1000
COPY requirements/openfl.txt /tmp/openfl.txt
# Exactly the lock, every file checked against its hash; torch's CPU build from PyTorch's own index.
RUN pip install --require-hashes --no-deps --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/openfl.txt \
    && rm /tmp/openfl.txt
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
USER 65532:65532
CMD ["python", "-m", "fleet.app_openfl.launcher", "--help"]

# The federated-learning app image: Flower's SuperLink (server role, with the ServerApp and the progress sidecar)
# and SuperNode (client role, with the ClientApp), plus the `fleet` package they run.
# Build from the repository root:  docker build -f docker/app.Dockerfile -t ghcr.io/fleet-fl/fleet-app:0.1.0 .
# Roles are chosen by the command the controller's objects give: `python -m fleet.federation.flower_launcher
# superlink|supernode` (Flower's entry points with mutual TLS; `flower-superlink`/`flower-supernode` for tls: false),
# `python -m fleet.federation.executor` (the ServerApp), `python -m fleet.controller.progress`, and the
# collaborator add-on's agent `python -m fleet.addon_agent`.

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
    FLWR_HOME=/tmp/.flwr
# torch first, from its CPU wheel: the project's own range would otherwise pull the CUDA build (GBs).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
USER 65532:65532
EXPOSE 9092 8080 8081
CMD ["fleet", "--help"]

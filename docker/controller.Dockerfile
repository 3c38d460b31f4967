# The controller image: `fleet controller` (kopf operator) on the OCM hub.
# Build from the repository root:  docker build -f docker/controller.Dockerfile -t ghcr.io/fleet-fl/fleet-controller:0.1.0 .
# The controller needs neither torch nor the renderer: the project's wheel goes in without its dependencies,
# then only what `fleet controller` imports, with the ranges of pyproject.toml (a test keeps them equal).

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
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl \
 && pip install \
      "flwr==1.41.0" \
      "pydantic>=2.11,<3" \
      "pyyaml>=6" \
      "kubernetes>=31" \
      "click>=8.1" \
      "rich>=13" \
      "cryptography>=42" \
      "kopf>=1.37" \
      "prometheus-client>=0.20" \
 && rm -rf /wheels
# The uid the rendered Deployment runs as (runAsNonRoot); the root file system is read-only there, /tmp is not.
USER 65532:65532
EXPOSE 8080 9090
CMD ["fleet", "controller"]

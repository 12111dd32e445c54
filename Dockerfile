# canary-operator image, published as ghcr.io/canary-dev/canary-operator:<version> (the Helm
# chart's default image; <version> is the project version, the chart's appVersion).
#
#   docker build -t ghcr.io/canary-dev/canary-operator:0.1.0 .
#
# Stage 1 installs the package into a virtualenv with the exact dependency versions the tests
# ran with (constraints.txt, from scripts/constraints.py); stage 2 is a clean slim Python with
# only that virtualenv, running as an unprivileged user. All dependencies ship wheels, so no
# compiler is needed in either stage.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/canary
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY canary ./canary
RUN /opt/canary/bin/pip install -c constraints.txt . \
 && /opt/canary/bin/pip check

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="canary-operator" \
      org.opencontainers.image.description="Progressive delivery operator for Kubernetes, field-compatible with Flagger" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 canary \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin canary
COPY --from=build /opt/canary /opt/canary
ENV PATH=/opt/canary/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# numeric, so that Kubernetes can check runAsNonRoot
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["canary"]
CMD ["operator"]

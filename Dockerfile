# syntax=docker/dockerfile:1
#
# inbox-service container image.
#
#   docker build -t inbox-service .
#   docker compose up          (see docker-compose.yml)
#
# Python 3.13: its stdlib email generator quotes newlines in headers
# (CVE-2024-6923), which matters for a service that writes mail.

ARG PYTHON_IMAGE=python:3.13-slim

# --------------------------------------------------------------------------
# builder: resolve the locked dependencies into /app/.venv
# --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# uv from its PyPI wheel (keeps every download on PyPI). Same version as the
# one that wrote uv.lock, so `--frozen` reads it as written.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --root-user-action=ignore "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed as a regular (non-editable) package so
# the runtime stage needs only the venv, not the source tree.
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --------------------------------------------------------------------------
# runtime
# --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="inbox-service" \
      org.opencontainers.image.description="API-first shared-inbox backend" \
      org.opencontainers.image.licenses="GPL-3.0-or-later"

RUN groupadd --system --gid 10001 inbox \
 && useradd --system --uid 10001 --gid inbox --home-dir /app \
            --no-create-home --shell /usr/sbin/nologin inbox

ENV VIRTUAL_ENV=/app/.venv \
    PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app

# Owned by root and read-only for the service user.
COPY --from=builder /app/.venv /app/.venv
COPY alembic.ini ./
COPY migrations ./migrations

EXPOSE 8000

# Only meaningful for the `serve` command; docker-compose.yml disables it for
# the migrate and worker services.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

USER inbox

CMD ["inbox-service", "serve", "--host", "0.0.0.0", "--port", "8000"]

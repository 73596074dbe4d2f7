# One image for every tracker service (migrate, worker, beat): built from pyproject.toml,
# runtime dependencies only, running as an unprivileged user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, read from pyproject.toml alone: a change to the source reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['server'] + p['optional-dependencies']['flower']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md alembic.ini ./
# The source folders build the one installed package, pixverse_tracker, and are then removed:
# the working folder (which `celery -A` puts on sys.path) holds no worker/ or models/ of ours.
COPY pyproject.toml README.md /tmp/src/
COPY models /tmp/src/models
COPY migrations /tmp/src/migrations
COPY worker /tmp/src/worker
RUN pip install --no-deps /tmp/src \
    && rm -rf /tmp/src \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tracker

USER tracker
# Database reachable and migrated, broker reachable, token not rejected (README: Commands).
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["pixverse-tracker", "health", "--timeout", "5"]
CMD ["pixverse-tracker", "worker"]
